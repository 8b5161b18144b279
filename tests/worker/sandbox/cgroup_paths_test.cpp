// Where the worker's cgroups are, from /proc/self/cgroup and /proc/self/mountinfo text: pure
// functions, so every host layout is tested on any host.
#include <catch2/catch.hpp>

#include "worker/sandbox/cgroup.hpp"

namespace kbfleet::worker {
namespace {

// A hybrid host (systemd "hybrid", this project's CI machine): v1 controllers, and a cgroup2
// mount at /sys/fs/cgroup/unified that holds no controller.
constexpr std::string_view kHybridCgroup =
    "9:name=systemd:/\n"
    "8:pids:/\n"
    "4:memory:/process_api/205c81f6\n"
    "2:cpu,cpuacct:/jobs/a\n"
    "0::/\n";
constexpr std::string_view kHybridMounts =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    "41 22 0:38 / /proc rw,nosuid - proc proc rw\n";

TEST_CASE("a hybrid host resolves each v1 controller and the cgroup2 mount", "[sandbox][cgroup]") {
  auto dirs = resolve_cgroup_dirs(kHybridCgroup, kHybridMounts);
  REQUIRE(dirs.v2);
  CHECK(*dirs.v2 == "/sys/fs/cgroup/unified");
  CHECK(dirs.v1.at("pids") == "/sys/fs/cgroup/pids");
  CHECK(dirs.v1.at("memory") == "/sys/fs/cgroup/memory/process_api/205c81f6");
  CHECK(dirs.v1.at("cpu") == "/sys/fs/cgroup/cpu,cpuacct/jobs/a");
  CHECK(dirs.v1.at("cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/jobs/a");
  CHECK(dirs.v1.count("name=systemd") == 0);
  CHECK(dirs.v1.size() == 4);
}

TEST_CASE("a v2 host resolves the service's cgroup under the cgroup2 mount", "[sandbox][cgroup]") {
  auto dirs = resolve_cgroup_dirs("0::/system.slice/kbfleet-worker.service\n",
                                  "25 20 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - "
                                  "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n");
  REQUIRE(dirs.v2);
  CHECK(*dirs.v2 == "/sys/fs/cgroup/system.slice/kbfleet-worker.service");
  CHECK(dirs.v1.empty());
}

TEST_CASE("a worker in the root cgroup resolves to the mount point itself", "[sandbox][cgroup]") {
  auto dirs = resolve_cgroup_dirs("0::/\n", "25 20 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  REQUIRE(dirs.v2);
  CHECK(*dirs.v2 == "/sys/fs/cgroup");
}

TEST_CASE("a mount of part of a hierarchy resolves paths relative to its root", "[sandbox][cgroup]") {
  // A container whose runtime bind-mounted its own cgroup (mountinfo root = that cgroup).
  constexpr std::string_view mounts =
      "50 40 0:31 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
      "51 40 0:35 /docker/abc /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n"
      "52 40 0:37 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
  SECTION("the process is in that cgroup") {
    auto dirs = resolve_cgroup_dirs("5:memory:/docker/abc\n4:pids:/docker/abc/worker\n0::/docker/abc\n", mounts);
    CHECK(dirs.v1.at("memory") == "/sys/fs/cgroup/memory");
    CHECK(dirs.v1.at("pids") == "/sys/fs/cgroup/pids/worker");
    CHECK(*dirs.v2 == "/sys/fs/cgroup/unified");
  }
  SECTION("the process is outside the mounted part") {
    auto dirs = resolve_cgroup_dirs("5:memory:/docker/abcd\n4:pids:/other\n0::/\n", mounts);
    CHECK(dirs.v1.empty());  // "/docker/abcd" is not under "/docker/abc"
    CHECK_FALSE(dirs.v2);
  }
}

TEST_CASE("escaped characters in mount points are decoded", "[sandbox][cgroup]") {
  auto dirs = resolve_cgroup_dirs("0::/a\n", "25 20 0:23 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n");
  REQUIRE(dirs.v2);
  CHECK(*dirs.v2 == "/mnt/cg two/a");
}

TEST_CASE("a host without cgroup mounts or with malformed lines resolves nothing", "[sandbox][cgroup]") {
  SECTION("no cgroup filesystems") {
    auto dirs = resolve_cgroup_dirs(kHybridCgroup, "41 22 0:38 / /proc rw,nosuid - proc proc rw\n");
    CHECK_FALSE(dirs.v2);
    CHECK(dirs.v1.empty());
  }
  SECTION("truncated lines") {
    auto dirs = resolve_cgroup_dirs("8:pids\n0:\ngarbage\n", "34 30 0:31 / /sys/fs/cgroup/memory rw -\n38 30\n");
    CHECK_FALSE(dirs.v2);
    CHECK(dirs.v1.empty());
  }
  SECTION("empty") {
    auto dirs = resolve_cgroup_dirs("", "");
    CHECK_FALSE(dirs.v2);
    CHECK(dirs.v1.empty());
  }
}

TEST_CASE("keyed cgroup files give the value of their key", "[sandbox][cgroup]") {
  constexpr std::string_view events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n";
  CHECK(keyed_value(events, "oom_kill") == 2);
  CHECK(keyed_value(events, "max") == 12);
  CHECK(keyed_value(events, "oom") == 3);  // not the prefix of oom_kill
  CHECK_FALSE(keyed_value(events, "missing"));
  CHECK(keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 7", "oom_kill") == 7);
  CHECK_FALSE(keyed_value("max lots\n", "max"));
  CHECK_FALSE(keyed_value("", "max"));
}

}  // namespace
}  // namespace kbfleet::worker
