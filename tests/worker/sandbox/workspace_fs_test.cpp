// Workspaces on this host's real filesystems: the directory a tmpfs workspace was mounted on is
// kept once the tmpfs is detached and becomes a later workspace, empty; a directory that holds
// anything is removed instead. Mounting needs a root worker: skips (WARN) otherwise.
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "tests/worker/executor/handler_harness.hpp"
#include "worker/sandbox/workspace_fs.hpp"

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

ino_t inode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_ino;
}

int spares_in(const fs::path& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += is_spare_workspace_name(e.path().filename().string());
  return n;
}

TEST_CASE("a tmpfs workspace's directory becomes the next workspace, empty", "[sandbox][workspace]") {
  TempDir work("/var/tmp");
  const fs::path first = work.path() / "t1-1", second = work.path() / "t2-1";
  REQUIRE(create_workspace(first));
  const ino_t mount_point = inode_of(first);
  auto mounted = mount_workspace(first, 4);
  if (!mounted) {
    WARN("skipped: cannot mount a tmpfs workspace: " << mounted.error().message);
    SUCCEED();
    return;
  }
  std::ofstream(first / "out" / "result.txt") << "task 1's output";
  retire_workspace(first);
  wait_workspaces_retired();
  CHECK_FALSE(fs::exists(first));
  CHECK(spares_in(work.path()) == 1);

  REQUIRE(create_workspace(second));
  CHECK(inode_of(second) == mount_point);  // the same directory, renamed
  CHECK(fs::is_empty(second));             // nothing of task 1 in it
  CHECK(spares_in(work.path()) == 0);
  unmount_workspace(second);
}

TEST_CASE("a workspace directory that holds files is removed, not kept", "[sandbox][workspace]") {
  TempDir work("/var/tmp");
  const fs::path plain = work.path() / "t1-1";
  REQUIRE(create_workspace(plain));
  fs::create_directory(plain / "out");  // a workspace without the disk layer: on the host's disk
  std::ofstream(plain / "out" / "result.txt") << "task 1's output";
  retire_workspace(plain);
  wait_workspaces_retired();
  CHECK_FALSE(fs::exists(plain));
  CHECK(spares_in(work.path()) == 0);
}

TEST_CASE("creating a workspace that exists already leaves it as it is", "[sandbox][workspace]") {
  TempDir work("/var/tmp");
  const fs::path ws = work.path() / "t1-1";
  REQUIRE(create_workspace(ws));
  std::ofstream(ws / "kept.txt") << "x";
  CHECK(create_workspace(ws));
  CHECK(fs::exists(ws / "kept.txt"));
  std::ofstream(work.path() / "t2-1") << "a file where the workspace goes";
  auto refused = create_workspace(work.path() / "t2-1");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == ErrorCode::kIoError);
  CHECK(refused.error().message.find("mkdir(") == 0);
}

// Retired side by side (workspace_fs.cpp runs several retiring threads): each directory becomes
// one spare, under a name of its own. More of them than a busy worker's loop has slots: a backlog
// of retirements is as deep as a detach is slow, and every directory removed there was one the
// loop had to mkdir again (the cap was 16).
TEST_CASE("workspaces retired at once all become spares", "[sandbox][workspace]") {
  TempDir work("/var/tmp");
  std::vector<fs::path> dirs;
  constexpr int kRetired = 40;
  for (int i = 0; i < kRetired; ++i) {
    dirs.push_back(work.path() / ("t" + std::to_string(i) + "-1"));
    REQUIRE(create_workspace(dirs.back()));
    auto mounted = mount_workspace(dirs.back(), 4);
    if (!mounted) {
      WARN("skipped: cannot mount a tmpfs workspace: " << mounted.error().message);
      for (const auto& d : dirs) unmount_workspace(d);
      SUCCEED();
      return;
    }
  }
  for (const auto& d : dirs) retire_workspace(d);
  wait_workspaces_retired();
  for (const auto& d : dirs) CHECK_FALSE(fs::exists(d));
  CHECK(spares_in(work.path()) == kRetired);
  for (int i = 0; i < kRetired; ++i) REQUIRE(create_workspace(work.path() / ("n" + std::to_string(i) + "-1")));
  CHECK(spares_in(work.path()) == 0);
}

}  // namespace
}  // namespace kbfleet::worker
