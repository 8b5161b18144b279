// kbfleet-init on its own, outside the launcher: its status records and exit codes, and that it
// starts without a C library's start-up (raw_syscall.hpp: a static glibc's CPU-feature probe
// traps to the hypervisor, ~450 us per exec on the benchmark VM). The launcher's use of it
// (signals forwarded, the handler's death by signal) is tested in
// tests/worker/executor/sandbox_launch_test.cpp.
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <string>
#include <vector>

#include "worker/sandbox/init/init_status.hpp"

namespace {

using kbfleet::worker::init::kStatusFd;
using kbfleet::worker::init::StatusKind;
using kbfleet::worker::init::StatusRecord;

struct InitRun {
  int wait_status = 0;
  std::vector<StatusRecord> records;
};

// Runs kbfleet-init with `args` and its status pipe on fd 4; returns its wait status and records.
InitRun run_init(std::vector<std::string> args) {
  int low[2];
  REQUIRE(::pipe2(low, O_CLOEXEC) == 0);
  // Both ends above kStatusFd, so the dup2 below always makes a non-CLOEXEC copy.
  int p[2] = {::fcntl(low[0], F_DUPFD_CLOEXEC, 10), ::fcntl(low[1], F_DUPFD_CLOEXEC, 10)};
  ::close(low[0]);
  ::close(low[1]);
  REQUIRE((p[0] >= 0 && p[1] >= 0));
  std::vector<char*> argv{const_cast<char*>("kbfleet-init")};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::dup2(p[1], kStatusFd) < 0) ::_exit(120);
    char* envp[] = {nullptr};
    ::execve(KBFLEET_INIT, argv.data(), envp);
    ::_exit(121);
  }
  ::close(p[1]);
  InitRun run;
  StatusRecord rec{};
  while (::read(p[0], &rec, sizeof rec) == static_cast<ssize_t>(sizeof rec)) run.records.push_back(rec);
  ::close(p[0]);
  REQUIRE(::waitpid(pid, &run.wait_status, 0) == pid);
  return run;
}

// Whether the instruction at `pc` of the stopped `pid` is a system call.
bool at_syscall(pid_t pid, unsigned long pc) {
  errno = 0;
  long word = ::ptrace(PTRACE_PEEKTEXT, pid, pc, nullptr);
  if (errno != 0) return false;
#if defined(__x86_64__)
  return (word & 0xffff) == 0x050f;  // syscall
#elif defined(__aarch64__)
  return (word & 0xffffffff) == 0xd4000001;  // svc #0
#endif
}

unsigned long pc_of(pid_t pid) {
  user_regs_struct regs{};
#if defined(__x86_64__)
  REQUIRE(::ptrace(PTRACE_GETREGS, pid, nullptr, &regs) == 0);
  return regs.rip;
#elif defined(__aarch64__)
  iovec io{&regs, sizeof regs};
  REQUIRE(::ptrace(PTRACE_GETREGSET, pid, NT_PRSTATUS, &io) == 0);
  return regs.pc;
#endif
}

}  // namespace

TEST_CASE("kbfleet-init reports the handler's start and exit and exits with its code", "[sandbox][init]") {
  auto run = run_init({"/bin/sh", "-c", "exit 3"});
  REQUIRE(run.records.size() == 2);
  CHECK(run.records[0].kind == StatusKind::kStarted);
  CHECK(run.records[1].kind == StatusKind::kExited);
  CHECK(WIFEXITED(run.records[1].value));
  CHECK(WEXITSTATUS(run.records[1].value) == 3);
  CHECK(WIFEXITED(run.wait_status));
  CHECK(WEXITSTATUS(run.wait_status) == 3);
}

TEST_CASE("kbfleet-init reports a handler killed by a signal as 128 + the signal", "[sandbox][init]") {
  auto run = run_init({"/bin/sh", "-c", "kill -KILL $$"});
  REQUIRE(run.records.size() == 2);
  CHECK(WIFSIGNALED(run.records[1].value));
  CHECK(WTERMSIG(run.records[1].value) == SIGKILL);
  CHECK(WEXITSTATUS(run.wait_status) == 128 + SIGKILL);
}

TEST_CASE("kbfleet-init reports the handler's execve errno and exits 127", "[sandbox][init]") {
  auto run = run_init({"/nonexistent/handler"});
  REQUIRE(run.records.size() == 1);
  CHECK(run.records[0].kind == StatusKind::kExecFailed);
  CHECK(run.records[0].value == ENOENT);
  CHECK(WEXITSTATUS(run.wait_status) == 127);
}

TEST_CASE("kbfleet-init without a handler exits 125", "[sandbox][init]") {
  auto run = run_init({});
  CHECK(run.records.empty());
  CHECK(WEXITSTATUS(run.wait_status) == 125);
}

// A static glibc runs thousands of instructions, CPUID among them, before its first system call;
// init's own code reaches its first one (fcntl on the status pipe) in a few dozen.
TEST_CASE("kbfleet-init makes its first system call within 200 instructions of its exec", "[sandbox][init]") {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    char* argv[] = {const_cast<char*>("kbfleet-init"), const_cast<char*>("/bin/true"), nullptr};
    char* envp[] = {nullptr};
    ::execve(KBFLEET_INIT, argv, envp);  // stops with SIGTRAP once the new image is in place
    ::_exit(121);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSTOPPED(status));
  REQUIRE(WSTOPSIG(status) == SIGTRAP);
  int steps = 0;
  while (steps <= 200 && !at_syscall(pid, pc_of(pid))) {
    REQUIRE(::ptrace(PTRACE_SINGLESTEP, pid, nullptr, nullptr) == 0);
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSTOPPED(status));
    ++steps;
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  CHECK(steps <= 200);
}
