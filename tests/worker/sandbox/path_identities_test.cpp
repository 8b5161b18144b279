// PathIdentities (path_identities.hpp): a replaced path is seen at the next check without waiting
// for a full one; what inotify cannot see (a mount over a path) within kFullCheckEvery. Every
// case checks at the same `now` as take() unless it says otherwise, so only the inotify watch
// can have seen the change.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.hpp"
#include "worker/sandbox/path_identities.hpp"

namespace {

namespace fs = std::filesystem;
using kbfleet::worker::PathIdentities;

void write_file(const fs::path& p, const char* text) { std::ofstream(p) << text; }

PathIdentities take(const std::vector<fs::path>& paths, PathIdentities::Clock::time_point now) {
  auto ids = PathIdentities::take(paths, now);
  REQUIRE(ids);
  REQUIRE(ids->watched());
  return std::move(*ids);
}

}  // namespace

TEST_CASE("a path replaced by rename is seen at the next check", "[sandbox][path_identities]") {
  kbfleet::test::TempDir dir;
  write_file(dir.path() / "ld.so.cache", "old");
  const auto now = PathIdentities::Clock::now();
  auto ids = take({dir.path() / "ld.so.cache"}, now);
  CHECK(ids.unchanged(now));
  write_file(dir.path() / "new", "new");
  REQUIRE(std::rename((dir.path() / "new").c_str(), (dir.path() / "ld.so.cache").c_str()) == 0);
  CHECK_FALSE(ids.unchanged(now));
  CHECK_FALSE(ids.unchanged(now + std::chrono::hours(1)));  // stays changed
}

TEST_CASE("a path whose directory was replaced is seen at the next check", "[sandbox][path_identities]") {
  kbfleet::test::TempDir dir;
  fs::create_directories(dir.path() / "ssl");
  write_file(dir.path() / "ssl" / "certs", "old");
  const auto now = PathIdentities::Clock::now();
  auto ids = take({dir.path() / "ssl" / "certs"}, now);
  fs::rename(dir.path() / "ssl", dir.path() / "ssl.old");
  fs::create_directories(dir.path() / "ssl");
  write_file(dir.path() / "ssl" / "certs", "new");
  CHECK_FALSE(ids.unchanged(now));
}

TEST_CASE("a path reached through a symlinked directory is watched where it really lives", "[sandbox][path_identities]") {
  kbfleet::test::TempDir dir;
  fs::create_directories(dir.path() / "usr" / "lib64");
  fs::create_symlink("usr/lib64", dir.path() / "lib64");
  write_file(dir.path() / "usr" / "lib64" / "ld.so", "old");
  const auto now = PathIdentities::Clock::now();
  auto ids = take({dir.path() / "lib64" / "ld.so"}, now);
  write_file(dir.path() / "usr" / "lib64" / "ld.so.new", "new");
  fs::rename(dir.path() / "usr" / "lib64" / "ld.so.new", dir.path() / "usr" / "lib64" / "ld.so");
  CHECK_FALSE(ids.unchanged(now));
}

TEST_CASE("an unrelated entry beside a path leaves it unchanged", "[sandbox][path_identities]") {
  kbfleet::test::TempDir dir;
  write_file(dir.path() / "passwd", "root");
  const auto now = PathIdentities::Clock::now();
  auto ids = take({dir.path() / "passwd"}, now);
  write_file(dir.path() / ".pwd.lock", "");
  fs::remove(dir.path() / ".pwd.lock");
  CHECK(ids.unchanged(now));  // the events forced a full check, which found nothing
  CHECK(ids.unchanged(now));
}

// A mount over a path changes what it names without any inotify event: a full check finds it
// once kFullCheckEvery has passed. In a child with a private mount namespace.
TEST_CASE("a mount over a path is seen by the full check within kFullCheckEvery", "[sandbox][path_identities]") {
  kbfleet::test::TempDir dir;
  write_file(dir.path() / "hosts", "old");
  write_file(dir.path() / "other", "new");
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) < 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) ::_exit(10);
    const auto now = PathIdentities::Clock::now();
    auto ids = PathIdentities::take({dir.path() / "hosts"}, now);
    if (!ids || !ids->watched()) ::_exit(11);
    if (::mount((dir.path() / "other").c_str(), (dir.path() / "hosts").c_str(), nullptr, MS_BIND, nullptr) < 0) ::_exit(12);
    // Not asserted: that a check inside the window misses the mount. The watch covers every
    // ancestor, /tmp too, so a file another process makes there forces a full check early.
    if (ids->unchanged(now + PathIdentities::kFullCheckEvery)) ::_exit(14);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 10) {
    std::puts("SKIPPED: needs a private mount namespace (root)");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a path that does not exist cannot be taken", "[sandbox][path_identities]") {
  kbfleet::test::TempDir dir;
  auto ids = PathIdentities::take({dir.path() / "missing"}, PathIdentities::Clock::now());
  REQUIRE_FALSE(ids);
  CHECK(ids.error().message.find("missing") != std::string::npos);
}
