// The Landlock layer against the real kernel: each probe runs in a forked child that sets
// no_new_privs, restricts itself and tries one thing; the parent asserts the outcome. Tests skip
// (with a warning naming the missing ABI) on kernels without the feature they need.
#include <fcntl.h>
#include <linux/landlock.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/posix/fd.hpp"
#include "tests/worker/sandbox/child_probe.hpp"
#include "worker/sandbox/capabilities.hpp"
#include "worker/sandbox/landlock.hpp"

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;
using testing::errno_of;
using testing::errno_outcome;
using testing::run_in_child;
using testing::TempDir;

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file);
  out << text;
  REQUIRE(out.good());
}

// A temp tree: ro/ (kRead, holds `file`), rw/ and rw2/ (kReadWrite, rw/ holds `mine`), and
// outside/secret, which no rule names.
struct Tree {
  TempDir tmp;
  fs::path ro = tmp.path() / "ro", rw = tmp.path() / "rw", rw2 = tmp.path() / "rw2";
  fs::path outside = tmp.path() / "outside";
  Tree() {
    for (const auto& d : {ro, rw, rw2, outside}) fs::create_directory(d);
    write_text(ro / "file", "read me");
    write_text(rw / "mine", "mine");
    write_text(outside / "secret", "secret");
  }
  std::vector<FsRule> rules() const {
    return {{ro, FsAccess::kRead}, {rw, FsAccess::kReadWrite}, {rw2, FsAccess::kReadWrite}};
  }
};

posix::Fd ruleset(const std::vector<FsRule>& rules) {
  auto rs = make_landlock_ruleset(rules, landlock_abi());
  if (!rs) FAIL("make_landlock_ruleset: " << rs.error().to_string());
  return std::move(*rs);
}

// In the child: no_new_privs, then Landlock; 0 or a kSetup* code.
int restrict_to(int ruleset_fd) {
  if (set_no_new_privs() < 0) return testing::kSetupNoNewPrivs;
  if (apply_landlock(ruleset_fd) < 0) return testing::kSetupLandlock;
  return 0;
}

// Runs `probe` in a child restricted by `fd`.
template <typename F>
std::string sandboxed(const posix::Fd& fd, F probe) {
  return run_in_child([&] {
    if (int rc = restrict_to(fd.get())) return rc;
    return probe();
  });
}

int open_errno(const fs::path& p, int flags) {
  int fd = ::open(p.c_str(), flags | O_CLOEXEC, 0644);
  int err = errno_of(fd);
  if (fd >= 0) ::close(fd);
  return err;
}

TEST_CASE("a Landlock sandbox denies reading what no rule grants", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  auto fd = ruleset(t.rules());
  CHECK(sandboxed(fd, [&] { return open_errno(t.outside / "secret", O_RDONLY); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return open_errno(t.outside, O_RDONLY | O_DIRECTORY); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return open_errno("/etc/passwd", O_RDONLY); }) == errno_outcome(EACCES));
  // The same opens work without the sandbox: the denial is Landlock's.
  CHECK(run_in_child([&] { return open_errno(t.outside / "secret", O_RDONLY); }) == "ok");
}

TEST_CASE("a read-only rule allows reading but no writing, creating or deleting",
          "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  auto fd = ruleset(t.rules());
  CHECK(sandboxed(fd, [&] { return open_errno(t.ro / "file", O_RDONLY); }) == "ok");
  CHECK(sandboxed(fd, [&] { return open_errno(t.ro, O_RDONLY | O_DIRECTORY); }) == "ok");
  CHECK(sandboxed(fd, [&] { return open_errno(t.ro / "file", O_WRONLY); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return open_errno(t.ro / "new", O_WRONLY | O_CREAT); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return errno_of(::mkdir((t.ro / "d").c_str(), 0755)); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return errno_of(::unlink((t.ro / "file").c_str())); }) == errno_outcome(EACCES));
  CHECK(fs::file_size(t.ro / "file") == 7);
}

TEST_CASE("a read-only rule denies truncating a file", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 3, "TRUNCATE needs Landlock ABI 3, kernel has " << landlock_abi());
  Tree t;
  auto fd = ruleset(t.rules());
  CHECK(sandboxed(fd, [&] { return errno_of(::truncate((t.ro / "file").c_str(), 0)); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return open_errno(t.ro / "file", O_RDONLY | O_TRUNC); }) == errno_outcome(EACCES));
  CHECK(fs::file_size(t.ro / "file") == 7);
}

TEST_CASE("a read-write rule allows creating, writing, renaming and deleting beneath it",
          "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  auto fd = ruleset(t.rules());
  CHECK(sandboxed(fd, [&] {
          int f = ::open((t.rw / "new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
          if (f < 0) return errno;
          if (::write(f, "hello", 5) != 5) return 100;
          ::close(f);
          if (::mkdir((t.rw / "sub").c_str(), 0755) < 0) return errno;
          // Same directory: a rename to another one needs REFER, checked in the link test below.
          if (::rename((t.rw / "new").c_str(), (t.rw / "moved").c_str()) < 0) return errno;
          if (::truncate((t.rw / "mine").c_str(), 0) < 0) return errno;
          return errno_of(::unlink((t.rw / "mine").c_str()));
        }) == "ok");
  CHECK(fs::file_size(t.rw / "moved") == 5);
  CHECK(fs::is_directory(t.rw / "sub"));
  CHECK(!fs::exists(t.rw / "mine"));
}

TEST_CASE("a file cannot be linked or renamed from a read-only directory into a writable one",
          "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  auto fd = ruleset(t.rules());
  // A hard link would make the read-only file writable through rw/ (REFER; EXDEV by the ABI 2
  // rule "the destination must not have more rights than the source").
  CHECK(sandboxed(fd, [&] { return errno_of(::link((t.ro / "file").c_str(), (t.rw / "file").c_str())); }) ==
        errno_outcome(EXDEV));
  CHECK(sandboxed(fd, [&] { return errno_of(::rename((t.ro / "file").c_str(), (t.rw / "file").c_str())); }) ==
        errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return errno_of(::rename((t.rw / "mine").c_str(), (t.ro / "mine").c_str())); }) ==
        errno_outcome(EACCES));
  // Outside every rule: no link into the sandbox either.
  CHECK(sandboxed(fd, [&] { return errno_of(::link((t.outside / "secret").c_str(), (t.rw / "s").c_str())); }) ==
        errno_outcome(EXDEV));
  CHECK(fs::exists(t.ro / "file"));
  CHECK(!fs::exists(t.rw / "file"));
  CHECK(!fs::exists(t.rw / "s"));
}

TEST_CASE("a file can be moved between two hierarchies with the same rights (REFER)", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 2, "REFER needs Landlock ABI 2, kernel has " << landlock_abi());
  Tree t;
  auto fd = ruleset(t.rules());
  CHECK(sandboxed(fd, [&] { return errno_of(::rename((t.rw / "mine").c_str(), (t.rw2 / "mine").c_str())); }) ==
        "ok");
  CHECK(fs::exists(t.rw2 / "mine"));
}

TEST_CASE("only an exec rule lets a sandboxed task run a binary", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  TempDir tmp;
  const fs::path ws = tmp.path();
  fs::create_directories(ws / "in");
  fs::create_directories(ws / "out");
  fs::copy_file("/bin/true", ws / "in" / "true");
  fs::copy_file("/bin/true", ws / "out" / "true");
  auto rules = workspace_rules(ws, {"in/**"}, {"out/**"});
  for (const char* sys : {"/usr", "/bin", "/lib", "/lib64", "/etc"}) rules.push_back({sys, FsAccess::kReadExec});
  auto fd = ruleset(rules);
  auto exec = [](const fs::path& bin) {
    char* const argv[] = {const_cast<char*>(bin.c_str()), nullptr};
    char* const envp[] = {nullptr};
    ::execve(bin.c_str(), argv, envp);
    return errno;
  };
  CHECK(sandboxed(fd, [&] { return exec("/bin/true"); }) == "ok");
  CHECK(sandboxed(fd, [&] { return exec(ws / "out" / "true"); }) == "ok");
  CHECK(sandboxed(fd, [&] { return exec(ws / "in" / "true"); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return open_errno(ws / "in" / "true", O_RDONLY); }) == "ok");
}

TEST_CASE("a rule on a file grants that file only, with file rights", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  // Directory rights on a file would make landlock_add_rule fail with EINVAL.
  auto fd = ruleset({{t.outside / "secret", FsAccess::kReadWriteExec}});
  CHECK(sandboxed(fd, [&] { return open_errno(t.outside / "secret", O_RDWR); }) == "ok");
  CHECK(sandboxed(fd, [&] { return open_errno(t.outside, O_RDONLY | O_DIRECTORY); }) == errno_outcome(EACCES));
  CHECK(sandboxed(fd, [&] { return open_errno(t.outside / "other", O_WRONLY | O_CREAT); }) ==
        errno_outcome(EACCES));
}

TEST_CASE("a rule whose path does not exist is skipped and reported", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  std::vector<fs::path> skipped;
  auto rs = make_landlock_ruleset({{t.ro, FsAccess::kRead},
                                   {t.tmp.path() / "missing", FsAccess::kReadWrite},
                                   {t.ro / "file" / "below-a-file", FsAccess::kRead}},
                                  landlock_abi(), &skipped);
  REQUIRE(rs);
  CHECK(rs->valid());
  CHECK(skipped == std::vector<fs::path>{t.tmp.path() / "missing", t.ro / "file" / "below-a-file"});
}

TEST_CASE("a rule added in the child covers what exists only there", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  const fs::path fresh = t.tmp.path() / "fresh";  // made by the child, as a tmpfs mounted there
  const std::uint64_t rw = landlock_access(FsAccess::kReadWrite, landlock_abi());
  // The child's landlock_add_rule changes the ruleset shared with the parent's fd: one per probe.
  auto fd = ruleset(t.rules());
  CHECK(run_in_child([&] {
          if (::mkdir(fresh.c_str(), 0755) < 0) return 100;
          if (landlock_allow_path(fd.get(), fresh.c_str(), rw) < 0) return 101;
          if (int rc = restrict_to(fd.get())) return rc;
          return open_errno(fresh / "made-inside", O_WRONLY | O_CREAT);
        }) == "ok");
  auto fd2 = ruleset(t.rules());
  CHECK(run_in_child([&] { return errno_of(landlock_allow_path(fd2.get(), (t.tmp.path() / "none").c_str(), rw)); }) ==
        errno_outcome(ENOENT));
  // On a file only the file rights are kept, so the directory rights in `rw` are no error.
  CHECK(run_in_child([&] { return errno_of(landlock_allow_path(fd2.get(), (t.ro / "file").c_str(), rw)); }) ==
        "ok");
}

TEST_CASE("the rights of an access never exceed what the ABI handles", "[sandbox][landlock]") {
  CHECK(landlock_access(FsAccess::kRead, 1) == (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR));
  CHECK((landlock_access(FsAccess::kReadWriteExec, 1) & ~((1ULL << 13) - 1)) == 0);
  CHECK((landlock_access(FsAccess::kReadWrite, 2) & LANDLOCK_ACCESS_FS_REFER) != 0);
  CHECK((landlock_access(FsAccess::kReadWrite, 7) & LANDLOCK_ACCESS_FS_EXECUTE) == 0);
  CHECK((landlock_access(FsAccess::kReadWrite, 7) & (LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_BLOCK)) ==
        0);
  CHECK((landlock_access(FsAccess::kReadExec, 7) & LANDLOCK_ACCESS_FS_EXECUTE) != 0);
}

TEST_CASE("without Landlock a ruleset is SANDBOX_UNAVAILABLE", "[sandbox][landlock]") {
  auto rs = make_landlock_ruleset({}, 0);
  REQUIRE(!rs);
  CHECK(rs.error().code == ErrorCode::kSandboxUnavailable);
  CHECK(rs.error().details.at("layer") == "landlock");
}

TEST_CASE("a sandboxed task cannot signal or reach the worker's abstract sockets (ABI 6 scopes)",
          "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 6, "Landlock scopes need ABI 6, kernel has " << landlock_abi());
  Tree t;
  auto fd = ruleset(t.rules());
  CHECK(sandboxed(fd, [] { return errno_of(::kill(::getppid(), 0)); }) == errno_outcome(EPERM));
  CHECK(sandboxed(fd, [] { return errno_of(::kill(::getppid(), SIGTERM)); }) == errno_outcome(EPERM));
  CHECK(sandboxed(fd, [] { return errno_of(::kill(::getpid(), 0)); }) == "ok");

  // The parent (standing in for the worker) listens on an abstract socket.
  posix::Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(listener);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string name = "kbfleet-landlock-test-" + std::to_string(::getpid());
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0);
  REQUIRE(::listen(listener.get(), 4) == 0);
  auto connect_once = [&] {
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 100;
    int err = errno_of(::connect(s, reinterpret_cast<sockaddr*>(&addr), len));
    ::close(s);
    return err;
  };
  CHECK(run_in_child(connect_once) == "ok");
  CHECK(sandboxed(fd, connect_once) == errno_outcome(EPERM));
}

// OpenedRules (the root template's paths, opened once) and FdRule (kbfleet-init's fd) grant what
// the same rules by path grant, each bound to the inode its path named when it was opened.
TEST_CASE("opened rules and fd rules grant like path rules, on the inode they were opened on", "[sandbox][landlock]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  Tree t;
  auto opened = OpenedRules::open({{t.ro, FsAccess::kRead}, {t.tmp.path() / "missing", FsAccess::kRead}});
  REQUIRE(opened);
  CHECK(opened->size() == 1);  // a missing path is left out, as make_landlock_ruleset skips it
  write_text(t.outside / "tool", "#!/bin/true");
  posix::Fd tool(::open((t.outside / "tool").c_str(), O_PATH | O_CLOEXEC));
  REQUIRE(tool);
  // Replaced after it was opened: the fd rule still names the old inode, not the new file.
  fs::rename(t.outside / "tool", t.outside / "tool.old");
  write_text(t.outside / "tool", "new");
  auto rs = make_landlock_ruleset(*opened, {{tool.get(), FsAccess::kRead}}, {{t.rw, FsAccess::kReadWrite}}, landlock_abi());
  REQUIRE(rs);
  CHECK(sandboxed(*rs, [&] { return open_errno(t.ro / "file", O_RDONLY); }) == "ok");
  CHECK(sandboxed(*rs, [&] { return open_errno(t.ro / "file", O_WRONLY); }) == errno_outcome(EACCES));
  CHECK(sandboxed(*rs, [&] { return open_errno(t.rw / "new", O_WRONLY | O_CREAT); }) == "ok");
  CHECK(sandboxed(*rs, [&] { return open_errno(t.outside / "tool.old", O_RDONLY); }) == "ok");
  CHECK(sandboxed(*rs, [&] { return open_errno(t.outside / "tool", O_RDONLY); }) == errno_outcome(EACCES));
  CHECK(sandboxed(*rs, [&] { return open_errno(t.outside / "secret", O_RDONLY); }) == errno_outcome(EACCES));
  // The opened rules are not used up: a second ruleset gets them again.
  auto again = make_landlock_ruleset(*opened, {}, {}, landlock_abi());
  REQUIRE(again);
  CHECK(sandboxed(*again, [&] { return open_errno(t.ro / "file", O_RDONLY); }) == "ok");
  CHECK(sandboxed(*again, [&] { return open_errno(t.rw / "mine", O_RDONLY); }) == errno_outcome(EACCES));
}

}  // namespace
}  // namespace kbfleet::worker
