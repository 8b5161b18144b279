// The task cgroup pool (worker/sandbox/cgroup_pool.hpp) on this host's real cgroups, with real
// handlers: a task's cgroup made ahead of time carries nothing of the task before it (processes,
// CPU usage), carries the limits it was asked for, and is removed once dropped. Skips (WARN)
// when the host has no usable cgroups.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "tests/worker/executor/handler_harness.hpp"
#include "tests/worker/sandbox/cgroup_test_support.hpp"
#include "worker/sandbox/cgroup.hpp"
#include "worker/sandbox/cgroup_pool.hpp"

namespace kbfleet::worker {
namespace {

using namespace std::chrono_literals;
using testing::Recorded;
using testing::TempDir;
using testing::dirs_of;
using testing::in_cgroup;
using testing::read_text;

// A pool over the probed cgroups for `slots`, or null (after a WARN) when the host has none.
std::shared_ptr<Cgroups> make_pool(int slots = 2) {
  auto real = probe_cgroups();
  if (!real) {
    WARN("skipped: no usable cgroups: " << real.error().message);
    return nullptr;
  }
  return pool_cgroups(std::move(*real), slots);
}

std::shared_ptr<TaskCgroup> take(const Cgroups& pool, const CgroupLimits& limits) {
  static int n = 0;
  auto cg = pool.create("pool-test-" + std::to_string(++n), limits);
  if (!cg) FAIL("cannot create a task cgroup: " << cg.error().to_string());
  return std::move(*cg);
}

bool is_spare(const TaskCgroup& cg) {
  return dirs_of(cg).front().filename().string().find("-spare-") != std::string::npos;
}

TEST_CASE("a pooled task cgroup starts with no process and no CPU usage of the task before it", "[sandbox][cgroup]") {
  auto pool = make_pool();
  if (!pool) {
    SUCCEED();
    return;
  }
  TempDir ws;
  testing::Subreaper reaper;
  const CgroupLimits limits{256, 64};

  // Task 1 spends its whole CPU budget, and leaves a process that escaped its process group.
  auto first = take(*pool, limits);
  if (!first->cpu_usage_ms()) {
    WARN("skipped: this host's task cgroups account no CPU (v1 without cpuacct)");
    SUCCEED();
    return;
  }
  const auto first_dirs = dirs_of(*first);
  auto spec = in_cgroup(testing::shell(std::string(testing::kEscapeFromGroup) + "echo ready; while :; do :; done",
                                       ws.path()),
                        std::move(first));
  spec.limits.cpu_ms = 200;
  spec.limits.timeout_ms = 20000;
  Recorded sink;
  auto p = testing::start(spec);
  spec = LaunchSpec{};  // the HandlerProcess is the cgroup's last owner
  SECTION("when task 1 ends") {
    testing::drive(*p, sink, nullptr, 20s);
    REQUIRE(p->outcome().reason == EndReason::kCpuLimit);
    CHECK(p->outcome().cpu_ms >= 200);
  }
  SECTION("when task 1 is dropped while it runs") {
    testing::drive(*p, sink, [&] { return sink.saw(Stream::kStdout, "ready"); }, 20s);
  }
  pid_t escaped = testing::read_pid_file(ws.path() / "escaped.pid");
  p.reset();
  if (auto status = reaper.await_exit(escaped, 2s)) CHECK((WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL));
  CHECK(testing::process_gone(escaped));

  // Task 2 gets a spare made before it arrived: another cgroup, empty and with nothing used.
  wait_idle(*pool);
  auto second = take(*pool, limits);
  REQUIRE(is_spare(*second));
  CHECK(dirs_of(*second) != first_dirs);
  for (const auto& procs : second->procs_files()) CHECK(read_text(procs).empty());
  CHECK(second->cpu_usage_ms() == std::optional<std::int64_t>(0));
  CHECK_FALSE(second->oom_killed());
  CHECK_FALSE(second->pids_limit_hit());
  // With the same CPU budget it runs to the end: none of task 1's usage counts against it.
  TempDir ws2;
  Recorded sink2;
  auto spec2 = in_cgroup(testing::shell("echo hi", ws2.path()), second);
  spec2.limits.cpu_ms = 200;
  auto p2 = testing::start(spec2);
  testing::drive(*p2, sink2);
  CHECK(p2->outcome().reason == EndReason::kExited);
  CHECK(p2->outcome().exit_code == 0);
  CHECK(*second->cpu_usage_ms() < 200);
}

TEST_CASE("a pooled task cgroup has the limits it was asked for, not those of the spares", "[sandbox][cgroup]") {
  auto pool = make_pool();
  if (!pool) {
    SUCCEED();
    return;
  }
  take(*pool, {64, 16}).reset();
  wait_idle(*pool);  // spares with 64 MiB and 16 pids are ready now
  auto spare = take(*pool, {64, 16});
  CHECK(is_spare(*spare));
  auto other = take(*pool, {128, 32});
  CHECK_FALSE(is_spare(*other));  // made for this call: no spare has these limits
  auto dirs = dirs_of(*other);
  if (pool->version() == "v2") {
    CHECK(read_text(dirs[0] / "memory.max") == std::to_string(128 << 20) + "\n");
    CHECK(read_text(dirs[0] / "pids.max") == "32\n");
  } else {
    CHECK(read_text(dirs[0] / "memory.limit_in_bytes") == std::to_string(128 << 20) + "\n");
    CHECK(read_text(dirs[1] / "pids.max") == "32\n");
  }
  // The spares are made with the last limits asked for from now on.
  wait_idle(*pool);
  auto next = take(*pool, {128, 32});
  CHECK(is_spare(*next));
  if (pool->version() == "v1") CHECK(read_text(dirs_of(*next)[1] / "pids.max") == "32\n");
}

TEST_CASE("a pooled task cgroup is removed once dropped, and the spares with the pool", "[sandbox][cgroup]") {
  auto pool = make_pool();
  if (!pool) {
    SUCCEED();
    return;
  }
  auto cg = take(*pool, {64, 16});
  auto dirs = dirs_of(*cg);
  cg.reset();
  wait_idle(*pool);
  for (const auto& d : dirs) CHECK_FALSE(std::filesystem::exists(d));
  auto spare = take(*pool, {64, 16});
  REQUIRE(is_spare(*spare));
  wait_idle(*pool);  // a spare made to replace it
  auto parent = dirs_of(*spare).front().parent_path();
  spare.reset();
  pool.reset();
  for (const auto& entry : std::filesystem::directory_iterator(parent)) {
    CHECK(entry.path().filename().string().find("-" + std::to_string(::getpid()) + "-spare-") == std::string::npos);
  }
}

// A one-slot worker's next task usually starts before the pool's thread ran after the last one
// ended: the spare beyond the slots is what it gets then.
TEST_CASE("a pool keeps one cgroup ready beyond its slots", "[sandbox][cgroup]") {
  auto pool = make_pool(1);
  if (!pool) {
    SUCCEED();
    return;
  }
  take(*pool, {64, 16}).reset();
  wait_idle(*pool);
  auto first = take(*pool, {64, 16});
  auto second = take(*pool, {64, 16});  // no wait: the thread made nothing in between
  CHECK(is_spare(*first));
  CHECK(is_spare(*second));
}

}  // namespace
}  // namespace kbfleet::worker
