// UidRangeLock (uid_range_lock.hpp): a range held by another process is refused with its pid, the
// automatic choice skips it, and the range is free again once the holder is gone. Record locks
// never conflict within one process, so the holder is a forked child.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "tests/support/temp_dir.hpp"
#include "worker/sandbox/uid_range_lock.hpp"

namespace {

using kbfleet::worker::UidRangeLock;

// A child holding uids [base, base + count) of `file` until it is killed.
pid_t hold_in_child(const std::filesystem::path& file, std::uint32_t base, int count) {
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(ready[0]);
    auto lock = UidRangeLock::take(base, count, file);
    const char ok = lock ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    if (!lock) ::_exit(1);  // nothing held: do not wait for a kill that a failed REQUIRE skips
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char ok = 0;
  REQUIRE(::read(ready[0], &ok, 1) == 1);
  ::close(ready[0]);
  REQUIRE(ok == 'y');
  return pid;
}

void end_child(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

}  // namespace

TEST_CASE("a task uid range held by another worker is refused, naming its pid", "[sandbox][uid_range]") {
  kbfleet::test::TempDir dir;
  const auto file = dir.path() / "task-uids.lock";
  const pid_t holder = hold_in_child(file, 300000, 4);

  auto same = UidRangeLock::take(300000, 4, file);
  REQUIRE_FALSE(same);
  CHECK(same.error().code == kbfleet::ErrorCode::kInvalidArgument);
  CHECK(same.error().message.find("300000-300003") != std::string::npos);
  CHECK(same.error().message.find("pid " + std::to_string(holder)) != std::string::npos);
  CHECK_FALSE(UidRangeLock::take(300003, 10, file));  // overlapping by one uid
  CHECK(UidRangeLock::take(300004, 10, file));         // adjacent: free

  end_child(holder);
  CHECK(UidRangeLock::take(300000, 4, file));  // the kernel dropped the dead holder's lock
}

TEST_CASE("without --task-uid-base a worker takes the first block no other worker holds", "[sandbox][uid_range]") {
  kbfleet::test::TempDir dir;
  const auto file = dir.path() / "task-uids.lock";
  {
    auto first = UidRangeLock::take_first_free(8, file);
    REQUIRE(first);
    CHECK(first->base() == UidRangeLock::kAutoFirst);
  }  // released: the child takes the first block next

  const pid_t holder = hold_in_child(file, UidRangeLock::kAutoFirst, 8);
  auto next = UidRangeLock::take_first_free(8, file);
  REQUIRE(next);
  CHECK(next->base() == UidRangeLock::kAutoFirst + UidRangeLock::kAutoStep);
  end_child(holder);
}

TEST_CASE("a task uid lock file that cannot be made is an IO_ERROR that says so", "[sandbox][uid_range]") {
  kbfleet::test::TempDir dir;
  const auto not_a_dir = dir.path() / "file";
  { std::FILE* f = std::fopen(not_a_dir.c_str(), "w"); REQUIRE(f); std::fclose(f); }
  auto lock = UidRangeLock::take(300000, 1, not_a_dir / "task-uids.lock");
  REQUIRE_FALSE(lock);
  CHECK(lock.error().code == kbfleet::ErrorCode::kIoError);
  CHECK(lock.error().message.find("task uid lock") != std::string::npos);
}
