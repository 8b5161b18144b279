// no_new_privs and the capability drop against the real kernel, in forked children. The process
// running the tests is root on the CI machine; tests that need a capability to drop skip (with a
// warning) when it has none.
#include <fcntl.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include <catch2/catch.hpp>

#include "common/posix/fd.hpp"
#include "tests/worker/sandbox/child_probe.hpp"
#include "worker/sandbox/capabilities.hpp"
#include "worker/sandbox/landlock.hpp"
#include "worker/sandbox/seccomp.hpp"

namespace kbfleet::worker {
namespace {

using testing::errno_of;
using testing::errno_outcome;
using testing::run_in_child;
using testing::TempDir;

constexpr int kSetupBefore = 210;  // the step before the drop failed: outcome "exit 210"

// The Cap* lines of a /proc/<pid>/status text: "CapEff" -> "0000000000000000".
std::map<std::string, std::string> cap_lines(const std::string& status) {
  std::map<std::string, std::string> out;
  std::istringstream in(status);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Cap", 0) != 0) continue;
    auto colon = line.find(':');
    auto value = line.find_first_not_of(" \t", colon + 1);
    out[line.substr(0, colon)] = line.substr(value);
  }
  return out;
}

bool has_effective_caps() {
  std::ifstream in("/proc/self/status");
  std::stringstream ss;
  ss << in.rdbuf();
  return cap_lines(ss.str())["CapEff"] != "0000000000000000";
}

// Runs `probe` in a child after `before` (returning false on failure) and
// drop_all_capabilities(); what the probe writes to the fd it is given comes back as the second
// member.
template <typename B, typename F>
std::pair<std::string, std::string> dropped_after(B before, F probe) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  posix::Fd read_end(fds[0]), write_end(fds[1]);
  std::string result = run_in_child([&] {
    read_end.reset();
    if (!before()) return kSetupBefore;
    if (drop_all_capabilities() < 0) return testing::kSetupCapabilities;
    return probe(write_end.get());
  });
  write_end.reset();
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  return {result, text};
}

template <typename F>
std::pair<std::string, std::string> dropped(F probe) {
  return dropped_after([] { return true; }, probe);
}

// Copies /proc/self/status to `out`.
int copy_status(int out) {
  int in = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (in < 0) return errno;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(in, buf, sizeof buf)) > 0) {
    if (::write(out, buf, static_cast<std::size_t>(n)) != n) return EIO;
  }
  ::close(in);
  return 0;
}

void check_no_caps(const std::string& status) {
  auto caps = cap_lines(status);
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    INFO(set);
    CHECK(caps[set] == "0000000000000000");
  }
}

TEST_CASE("after the drop every capability set is empty", "[sandbox][capabilities]") {
  SKIP_UNLESS(has_effective_caps(), "the test process holds no capability to drop");
  auto [result, status] = dropped(copy_status);
  REQUIRE(result == "ok");
  check_no_caps(status);
}

TEST_CASE("uid 0 regains no capability by execve after the drop", "[sandbox][capabilities]") {
  SKIP_UNLESS(has_effective_caps(), "the test process holds no capability to drop");
  auto [result, status] = dropped([](int out) {
    if (::dup2(out, STDOUT_FILENO) < 0) return errno;
    char* const argv[] = {const_cast<char*>("/bin/cat"), const_cast<char*>("/proc/self/status"), nullptr};
    char* const envp[] = {nullptr};
    ::execve("/bin/cat", argv, envp);
    return errno;
  });
  REQUIRE(result == "ok");
  CHECK(cap_lines(status)["CapEff"].size() == 16);
  check_no_caps(status);
}

TEST_CASE("after the drop privileged calls fail with EPERM", "[sandbox][capabilities]") {
  SKIP_UNLESS(has_effective_caps(), "the test process holds no capability to drop");
  TempDir tmp;
  auto file = tmp.path() / "file";
  std::ofstream(file) << "x";
  // With capabilities the chown works: the EPERM below is the drop's.
  CHECK(run_in_child([&] { return errno_of(::chown(file.c_str(), 12345, 12345)); }) == "ok");
  CHECK(dropped([&](int) { return errno_of(::chown(file.c_str(), 23456, 23456)); }).first ==
        errno_outcome(EPERM));
  CHECK(dropped([](int) { return errno_of(::setuid(12345)); }).first == errno_outcome(EPERM));
}

TEST_CASE("after the drop the securebits are set and locked", "[sandbox][capabilities]") {
  SKIP_UNLESS(has_effective_caps(), "the test process holds no capability to drop");
  constexpr int kExpected = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
                            SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
                            SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  CHECK(dropped([](int) { return ::prctl(PR_GET_SECUREBITS) == kExpected ? 0 : 100; }).first == "ok");
}

TEST_CASE("the drop works after a uid change that kept the capabilities permitted",
          "[sandbox][capabilities]") {
  SKIP_UNLESS(has_effective_caps(), "the test process holds no capability to drop");
  auto [result, status] = dropped_after([] {
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return false;
    return ::setresgid(12345, 12345, 12345) == 0 && ::setresuid(12345, 12345, 12345) == 0;
  }, copy_status);
  REQUIRE(result == "ok");
  check_no_caps(status);
  CHECK(dropped_after([] { return ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0 && ::setresuid(12345, 12345, 12345) == 0; },
                      [](int) { return ::prctl(PR_GET_KEEPCAPS) == 0 ? 0 : 100; })
            .first == "ok");
}

TEST_CASE("the drop fails with EPERM once the capabilities are gone from the permitted set",
          "[sandbox][capabilities]") {
  SKIP_UNLESS(has_effective_caps(), "the test process holds no capability to drop");
  // A plain setresuid() to a non-zero uid clears them: the bounding set can no longer be emptied.
  CHECK(dropped_after([] { return ::setresuid(12345, 12345, 12345) == 0; }, [](int) { return 0; }).first ==
        "setup failed: capabilities");
}

TEST_CASE("no_new_privs is set and survives execve", "[sandbox][capabilities]") {
  CHECK(run_in_child([] {
          if (set_no_new_privs() < 0) return testing::kSetupNoNewPrivs;
          return ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 ? 0 : 100;
        }) == "ok");
  CHECK(run_in_child([] {
          if (set_no_new_privs() < 0) return testing::kSetupNoNewPrivs;
          char* const argv[] = {const_cast<char*>("/bin/grep"), const_cast<char*>("-q"),
                                const_cast<char*>("^NoNewPrivs:\t1$"), const_cast<char*>("/proc/self/status"),
                                nullptr};
          char* const envp[] = {nullptr};
          ::execve("/bin/grep", argv, envp);
          return errno;
        }) == "ok");
}

// The launcher's order (architecture.md): no_new_privs, Landlock, capability drop, seccomp,
// execve. Each later step must still be possible after the earlier ones.
TEST_CASE("all layers apply in the launcher's order and a handler still runs", "[sandbox][capabilities]") {
  SKIP_UNLESS(landlock_abi() >= 1, "Landlock unavailable on this kernel");
  auto filter = SeccompFilter::build();
  REQUIRE(filter);
  std::vector<FsRule> rules;
  for (const char* sys : {"/usr", "/bin", "/lib", "/lib64"}) rules.push_back({sys, FsAccess::kReadExec});
  auto ruleset = make_landlock_ruleset(rules, landlock_abi());
  REQUIRE(ruleset);
  const sock_fprog* prog = filter->program();
  int rs = ruleset->get();
  CHECK(run_in_child([&] {
          if (set_no_new_privs() < 0) return testing::kSetupNoNewPrivs;
          if (apply_landlock(rs) < 0) return testing::kSetupLandlock;
          if (drop_all_capabilities() < 0) return testing::kSetupCapabilities;
          if (apply_seccomp(prog) < 0) return testing::kSetupSeccomp;
          char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
          char* const envp[] = {nullptr};
          ::execve("/bin/true", argv, envp);
          return errno;
        }) == "ok");
}

}  // namespace
}  // namespace kbfleet::worker
