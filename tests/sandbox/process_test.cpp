// Attacks on other processes: the worker (signal, ptrace, environment), fds it might leak, and a
// daemon meant to outlive the task. The pid namespace hides every host process; seccomp and the
// missing capabilities refuse ptrace; the launcher closes fds and builds the environment anew.
#include <signal.h>

#include <chrono>

#include "tests/sandbox/hostile_fleet.hpp"

using namespace kbfleet::test;
using namespace kbfleet::test::hostile;

TEST_CASE("a task cannot signal the worker", "[sandbox][hostile][process]") {
  // Attack: kill(<worker's host pid>, SIGKILL). Expected: ESRCH, as the host pid does not exist in
  // the task's pid namespace; EPERM from the different uid otherwise. The worker lives on.
  HostileFleet h;
  auto f = h.run("signal-worker", {{"pid", std::to_string(h.worker_pid())}});
  CHECK_CONTAINED(f, "(ESRCH)", "(EPERM)");
  CHECK(process_alive(h.worker_pid()));
}

TEST_CASE("a task cannot ptrace the worker", "[sandbox][hostile][process]") {
  // Attack: ptrace(PTRACE_SEIZE, <worker's host pid>), to read its memory and keys. Expected:
  // EPERM from seccomp (ptrace denied); ESRCH (pid ns) and EPERM (no CAP_SYS_PTRACE) below it.
  HostileFleet h;
  auto f = h.run("ptrace-worker", {{"pid", std::to_string(h.worker_pid())}});
  CHECK_CONTAINED(f, "(EPERM)", "(ESRCH)");
}

TEST_CASE("a task cannot read the worker's environment", "[sandbox][hostile][process]") {
  // Attack: the worker runs with HOSTILE_WORKER_SECRET=<token>; the task reads
  // /proc/<worker pid>/environ, then scans its own environment. Expected: ENOENT for the first
  // (pid ns: the worker is not in the task's /proc; EACCES across uids otherwise) and no trace of
  // the variable in the second (env built from scratch).
  auto token = unique_token();
  HostileFleet h({}, {{"HOSTILE_WORKER_SECRET", token}});
  REQUIRE(read_file("/proc/" + std::to_string(h.worker_pid()) + "/environ").find(token) != std::string::npos);
  SECTION("through /proc/<worker pid>/environ") {
    auto f = h.run("worker-environ", {{"pid", std::to_string(h.worker_pid())}, {"token", token}});
    CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)");
  }
  SECTION("through its own environment") {
    auto f = h.run("own-environ", {{"token", token}});
    CHECK_CONTAINED(f, "no worker variable");
  }
}

TEST_CASE("a task inherits no fd above 3 from the worker", "[sandbox][hostile][process]") {
  // Attack: probe fds 4..RLIMIT_NOFILE with fcntl(F_GETFD) for anything the worker leaked (its
  // broker socket, logs, another task's pipes). Expected: none open (close_range of all but 0-3).
  HostileFleet h;
  auto f = h.run("inherited-fds");
  CHECK_CONTAINED(f, "no fd above 3");
}

TEST_CASE("a double-forked setsid daemon does not outlive its task", "[sandbox][hostile][process]") {
  // Attack: fork, setsid, fork again; the grandchild closes the task's pipes and re-executes as
  // `kbfleet-attack sleeper <token>`, out of the task's process group and session, then the
  // handler exits 0. Expected: when the task ends, nothing with <token> in its command line is
  // left on the host (pid-namespace init dies and takes all with it; cgroup kill as well).
  HostileFleet h;
  auto token = unique_token();
  auto f = h.run("outlive", {{"token", token}});
  INFO(f.describe());
  REQUIRE(f.output.find("PLANTED: ") != std::string::npos);
  CHECK(f.state == "succeeded");
  auto deadline = std::chrono::steady_clock::now() + 10s;
  auto survivors = processes_with(token);
  while (!survivors.empty() && std::chrono::steady_clock::now() < deadline) {
    survivors = processes_with(token);
  }
  CHECK(survivors.empty());
  for (pid_t pid : survivors) kill(pid, SIGKILL);  // the daemon this test caused; by pid only
}
