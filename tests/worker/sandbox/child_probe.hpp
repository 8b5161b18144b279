#pragma once
// Runs an irreversible sandbox step and a probe in a forked child; the parent asserts the
// outcome, a readable string ("ok", "errno EPERM", "signal SYS"), as Chromium's SANDBOX_TEST does.
// A probe returns 0 for success, the errno it saw, or one of the kSetup* codes when the sandbox
// step itself failed (errno values stay below 200).
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.hpp"

namespace kbfleet::worker::testing {

constexpr int kSetupNoNewPrivs = 201;
constexpr int kSetupLandlock = 202;
constexpr int kSetupCapabilities = 203;
constexpr int kSetupSeccomp = 204;
constexpr int kChildThrew = 250;
// Bounds a hung probe: the child gets SIGALRM (a failure the parent sees), never a hung test.
constexpr unsigned kChildAlarmSeconds = 20;

// 0 if a syscall-style result succeeded, else errno.
inline int errno_of(long rc) { return rc < 0 ? errno : 0; }

inline std::string outcome(int status) {
  if (WIFSIGNALED(status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(status));
    return std::string("signal ") + (abbrev ? abbrev : std::to_string(WTERMSIG(status)).c_str());
  }
  int code = WEXITSTATUS(status);
  if (code == 0) return "ok";
  if (code == kSetupNoNewPrivs) return "setup failed: no_new_privs";
  if (code == kSetupLandlock) return "setup failed: landlock";
  if (code == kSetupCapabilities) return "setup failed: capabilities";
  if (code == kSetupSeccomp) return "setup failed: seccomp";
  if (code == kChildThrew) return "child threw";
  const char* name = strerrorname_np(code);
  return name ? std::string("errno ") + name : "exit " + std::to_string(code);
}

inline std::string errno_outcome(int err) { return std::string("errno ") + strerrorname_np(err); }

// Forks, runs `probe` in the child and _exits with its result; returns outcome(wait status).
template <typename F>
std::string run_in_child(F probe) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Catch2 (and ASan) handle fatal signals to report them; in the child they must kill it, so
    // that the parent sees the signal and the child never prints a second test report.
    for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTERM, SIGINT, SIGSYS}) ::signal(sig, SIG_DFL);
    ::alarm(kChildAlarmSeconds);
    int code = kChildThrew;
    try {
      code = probe();
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) REQUIRE(errno == EINTR);
  return outcome(status);
}

using TempDir = kbfleet::test::TempDir;  // under $TMPDIR, or /tmp

}  // namespace kbfleet::worker::testing

// Catch2 2.13 has no SKIP: print "SKIPPED: <reason>" as a warning and end the test case; CTest
// reports the test skipped (SKIP_REGULAR_EXPRESSION in CMakeLists.txt), never passed.
#define SKIP_UNLESS(cond, reason)      \
  do {                                 \
    if (!(cond)) {                     \
      WARN("SKIPPED: " << reason);     \
      return;                          \
    }                                  \
  } while (0)
