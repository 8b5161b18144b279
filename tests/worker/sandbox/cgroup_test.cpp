// The cgroup layer on this host's real cgroups, with real handlers: memory and pids quotas end
// tasks with their own reasons, the cgroup kill reaches what left the process group, and nothing
// of a task's cgroup outlives it. Every test probes first and reports a skip (WARN) when the host
// has no usable cgroups: a skip is never a pass in disguise.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "tests/worker/executor/handler_harness.hpp"
#include "tests/worker/sandbox/cgroup_test_support.hpp"
#include "worker/sandbox/cgroup.hpp"
#include "worker/task/task_run.hpp"

namespace kbfleet::worker {
namespace {

using namespace std::chrono_literals;
using testing::Recorded;
using testing::TempDir;
using testing::dirs_of;
using testing::in_cgroup;
using testing::read_text;

// The probe result, once per test process (probing may move a v2 worker into a leaf).
const Result<std::unique_ptr<Cgroups>>& probed() {
  static const Result<std::unique_ptr<Cgroups>> result = probe_cgroups();
  return result;
}

#define REQUIRE_CGROUPS_OR_SKIP()                                     \
  do {                                                                \
    if (!probed()) {                                                  \
      WARN("skipped: no usable cgroups: " << probed().error().message); \
      SUCCEED();                                                      \
      return;                                                         \
    }                                                                 \
  } while (0)

const Cgroups& cgroups() { return **probed(); }

// A unique task cgroup name per call within this test process.
std::string next_name() {
  static int n = 0;
  return "test-" + std::to_string(++n);
}

std::shared_ptr<TaskCgroup> make_cgroup(const CgroupLimits& limits) {
  auto cg = cgroups().create(next_name(), limits);
  if (!cg) FAIL("cannot create a task cgroup: " << cg.error().to_string());
  return std::move(*cg);
}

bool lists_pid(const std::string& procs_file, pid_t pid) {
  std::istringstream in(read_text(procs_file));
  for (long p; in >> p;) {
    if (p == pid) return true;
  }
  return false;
}

bool killed_by_sigkill(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

TEST_CASE("a task cgroup carries the memory and pids limits", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  auto cg = make_cgroup({64, 16});
  auto dirs = dirs_of(*cg);
  if (cgroups().version() == "v2") {
    REQUIRE(dirs.size() == 1);
    CHECK(read_text(dirs[0] / "memory.max") == std::to_string(64 << 20) + "\n");
    CHECK(read_text(dirs[0] / "pids.max") == "16\n");
    if (std::filesystem::exists(dirs[0] / "memory.swap.max")) CHECK(read_text(dirs[0] / "memory.swap.max") == "0\n");
  } else {
    REQUIRE(dirs.size() >= 2);  // memory, pids, and cpuacct where the host mounts it
    CHECK(read_text(dirs[0] / "memory.limit_in_bytes") == std::to_string(64 << 20) + "\n");
    if (std::filesystem::exists(dirs[0] / "memory.memsw.limit_in_bytes")) {
      CHECK(read_text(dirs[0] / "memory.memsw.limit_in_bytes") == std::to_string(64 << 20) + "\n");
    }
    CHECK(read_text(dirs[1] / "pids.max") == "16\n");
  }
}

TEST_CASE("a handler joins its task cgroup before exec and gets no RLIMIT_AS", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  rlimit as{};
  REQUIRE(::getrlimit(RLIMIT_AS, &as) == 0);
  TempDir ws;
  Recorded sink;
  auto cg = make_cgroup({256, 64});
  auto spec = in_cgroup(testing::shell("ulimit -v; echo ready; sleep 100", ws.path()), cg);
  spec.limits.memory_mb = 256;  // without the cgroup this would be RLIMIT_AS (executor_test)
  auto p = testing::start(spec);
  testing::drive(*p, sink, [&] { return sink.saw(Stream::kStdout, "ready"); });
  for (const auto& procs : cg->procs_files()) CHECK(lists_pid(procs, p->pid()));
  if (as.rlim_cur == RLIM_INFINITY) CHECK(sink.texts(Stream::kStdout).front() == "unlimited");
}

TEST_CASE("a handler over its memory quota is OOM-killed and ends MEMORY_LIMIT", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  TempDir ws;
  Recorded sink;
  LaunchSpec spec;
  spec.exec = KBFLEET_MEMORY_HOG;
  spec.args = {"200"};  // MiB, touched page by page
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.workspace = ws.path();
  spec.limits.timeout_ms = 20000;
  spec.limits.memory_mb = 64;
  auto p = testing::start(in_cgroup(spec, make_cgroup({64, 16})));
  testing::drive(*p, sink, nullptr, 30s);
  CHECK_FALSE(sink.saw(Stream::kStdout, "touched 200 MiB"));
  CHECK(p->outcome().reason == EndReason::kMemoryLimit);
  CHECK(p->outcome().signal == SIGKILL);

  Limits limits;
  limits.memory_mb = 64;
  auto task = outcome_of(p->outcome(), limits);
  CHECK(task.state == "failed");
  CHECK(task.error_code == "MEMORY_LIMIT");
  CHECK(task.error_message ==
        "the handler used more than quotas.memoryMb (64 MiB) and was killed by the kernel's OOM killer; raise "
        "quotas.memoryMb or use less memory");
}

TEST_CASE("a fork bomb is held at its pids quota and ends PIDS_LIMIT", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  TempDir ws;
  testing::Subreaper reaper;
  Recorded sink;
  // Bounded on its own (100 sleeps), so even without the quota the host would be fine. With
  // pids 16 the shell's 16th fork fails and the shell exits non-zero.
  auto spec = testing::shell("i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; wait", ws.path());
  spec.limits.timeout_ms = 15000;
  spec.limits.pids = 16;
  auto cg = make_cgroup({64, 16});
  auto p = testing::start(in_cgroup(spec, cg));
  testing::drive(*p, sink, nullptr, 20s);
  CHECK(p->outcome().reason == EndReason::kPidsLimit);
  CHECK(p->outcome().exit_code > 0);
  CHECK(cg->pids_limit_hit());
  for (const auto& procs : cg->procs_files()) CHECK(read_text(procs).empty());  // the sleeps are gone

  Limits limits;
  limits.pids = 16;
  auto task = outcome_of(p->outcome(), limits);
  CHECK(task.state == "failed");
  CHECK(task.error_code == "PIDS_LIMIT");
  CHECK(task.error_message ==
        "the handler tried to run more than quotas.pids (16) processes and threads at once; a fork failed and the "
        "handler failed; raise quotas.pids");
}

TEST_CASE("a handler that recovers from a failed fork still succeeds", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  TempDir ws;
  testing::Subreaper reaper;
  Recorded sink;
  // An inner shell forks until the quota stops it and fails; the handler carries on and exits 0.
  auto spec = testing::shell(
      "sh -c 'i=0; while [ $i -lt 50 ]; do sleep 30 & i=$((i+1)); done' 2>/dev/null; echo recovered; exit 0",
      ws.path());
  auto cg = make_cgroup({64, 4});
  auto p = testing::start(in_cgroup(spec, cg));
  testing::drive(*p, sink);
  CHECK(cg->pids_limit_hit());
  CHECK(sink.saw(Stream::kStdout, "recovered"));
  CHECK(p->outcome().reason == EndReason::kExited);
  CHECK(p->outcome().exit_code == 0);
}

TEST_CASE("CPU used by a handler's children counts against one whole-task budget and ends CPU_LIMIT", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  auto cg = make_cgroup({256, 64});
  if (!cg->cpu_usage_ms()) {
    WARN("skipped: this host's task cgroups account no CPU (v1 without cpuacct)");
    SUCCEED();
    return;
  }
  TempDir ws;
  Recorded sink;
  // Two spinning children: each alone stays under RLIMIT_CPU's whole second for a while, but
  // together they spend the 600 ms budget first.
  auto spec = in_cgroup(testing::shell("(while :; do :; done) & (while :; do :; done) & wait", ws.path()), cg);
  spec.limits.cpu_ms = 600;
  spec.limits.timeout_ms = 20000;  // CPU time, not wall time, must end it
  auto p = testing::start(spec);
  testing::drive(*p, sink, nullptr, 20s);
  CHECK(p->outcome().reason == EndReason::kCpuLimit);
  CHECK(p->outcome().signal == SIGKILL);
  CHECK(p->outcome().cpu_ms >= 600);           // counted from the cgroup, children included
  CHECK(p->outcome().cpu_ms < 1900);           // not the 2 s the per-process limits would allow
}

TEST_CASE("a task cgroup with a CPU quota throttles its processes together", "[sandbox][cgroup]") {
  static const Result<std::unique_ptr<Cgroups>> with_cpu = probe_cgroups(CgroupOptions{true});
  if (!with_cpu || !(*with_cpu)->cpu_bandwidth()) {
    WARN("skipped: no cgroup cpu controller for the worker: " << (with_cpu ? "not delegated" : with_cpu.error().message));
    SUCCEED();
    return;
  }
  auto made = (*with_cpu)->create(next_name(), {256, 64, kCpuPeriodUs / 5});  // 0.2 CPU
  REQUIRE(made);
  std::shared_ptr<TaskCgroup> cg = std::move(*made);
  TempDir ws;
  Recorded sink;
  // Two spinners for 600 ms of wall time: unthrottled they would use up to 1.2 s of CPU.
  auto spec = in_cgroup(testing::shell("(while :; do :; done) & (while :; do :; done) & wait", ws.path()), cg);
  spec.limits.timeout_ms = 600;
  spec.limits.kill_grace_ms = 0;
  auto p = testing::start(spec);
  testing::drive(*p, sink, nullptr, 20s);
  CHECK(p->outcome().reason == EndReason::kTimeout);
  // The kernel throttled the cgroup: cpu.stat counts the periods it hit the quota (v1 in the cpu
  // hierarchy's directory, v2 in the task's one).
  std::int64_t throttled = 0;
  for (const auto& dir : dirs_of(*cg)) {
    if (auto n = keyed_value(read_text(dir / "cpu.stat"), "nr_throttled")) throttled += *n;
  }
  CHECK(throttled > 0);
  CHECK(p->outcome().cpu_ms < 600);  // about 0.2 x the wall time, far from 2 x
}

TEST_CASE("the cgroup kill reaches a process that left the handler's process group",
          "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  TempDir ws;
  testing::Subreaper reaper;
  Recorded sink;
  const std::string escape = testing::kEscapeFromGroup;
  auto spec = testing::shell(escape + "echo done", ws.path());
  EndReason expected = EndReason::kExited;
  SECTION("when the handler exits") {}
  SECTION("when the handler times out") {
    spec = testing::shell(escape + "trap '' TERM; echo done; while :; do sleep 1; done", ws.path());
    spec.limits.timeout_ms = 300;
    expected = EndReason::kTimeout;
  }
  auto p = testing::start(in_cgroup(spec, make_cgroup({64, 16})));
  auto elapsed = testing::drive(*p, sink);
  pid_t escaped = testing::read_pid_file(ws.path() / "escaped.pid");
  auto status = reaper.await_exit(escaped, 2s);  // fails the test if it is still alive
  if (status) CHECK(killed_by_sigkill(*status));
  CHECK(testing::process_gone(escaped));
  CHECK(p->outcome().reason == expected);
  CHECK(sink.saw(Stream::kStdout, "done"));
  // The escapee held stdout; it died with the cgroup, so there was no drain period to wait out.
  CHECK(elapsed - std::chrono::milliseconds(p->outcome().wall_ms) < 450ms);
}

TEST_CASE("a task's cgroup is removed when its HandlerProcess goes", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  TempDir ws;
  testing::Subreaper reaper;
  Recorded sink;
  std::vector<std::filesystem::path> dirs;
  SECTION("after the handler finished") {
    auto cg = make_cgroup({64, 16});
    dirs = dirs_of(*cg);
    auto p = testing::start(in_cgroup(testing::shell("echo hi", ws.path()), std::move(cg)));
    testing::drive(*p, sink);
    for (const auto& d : dirs) CHECK(std::filesystem::exists(d));  // still there for the outcome
    p.reset();
  }
  SECTION("while the handler and a setsid escapee still run") {
    auto cg = make_cgroup({64, 16});
    dirs = dirs_of(*cg);
    auto p = testing::start(in_cgroup(
        testing::shell(std::string(testing::kEscapeFromGroup) + "echo ready; sleep 100", ws.path()),
        std::move(cg)));
    testing::drive(*p, sink, [&] { return sink.saw(Stream::kStdout, "ready"); });
    pid_t escaped = testing::read_pid_file(ws.path() / "escaped.pid");
    p.reset();
    if (auto status = reaper.await_exit(escaped, 2s)) CHECK(killed_by_sigkill(*status));
  }
  SECTION("when the handler could not start") {
    auto cg = make_cgroup({64, 16});
    dirs = dirs_of(*cg);
    LaunchSpec spec = in_cgroup(testing::shell("true", ws.path()), std::move(cg));
    spec.exec = ws.path() / "no-such-handler";
    auto p = HandlerProcess::spawn(spec);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == ErrorCode::kExecFailed);
    // `spec` is the last owner here; dropping it removes the cgroup.
    spec = LaunchSpec{};
  }
  REQUIRE(!dirs.empty());
  for (const auto& d : dirs) CHECK_FALSE(std::filesystem::exists(d));
}

TEST_CASE("the next worker removes the task cgroups of a worker killed mid-task", "[sandbox][cgroup]") {
  REQUIRE_CGROUPS_OR_SKIP();
  struct stat ns {};
  REQUIRE(::stat("/proc/self/ns/pid", &ns) == 0);
  pid_t dead = ::fork();
  REQUIRE(dead >= 0);
  if (dead == 0) ::_exit(0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);
  auto name = [&](pid_t pid, std::string_view what) {
    return "kbfleet-" + std::to_string(ns.st_ino) + "-" + std::to_string(pid) + "-" + std::string(what);
  };
  // The parents of task cgroups: one per hierarchy on v1.
  std::vector<std::filesystem::path> parents;
  for (const auto& d : dirs_of(*make_cgroup({}))) parents.push_back(d.parent_path());
  std::vector<std::filesystem::path> stale, kept;
  for (const auto& parent : parents) {
    stale.push_back(parent / name(dead, "stale-1"));
    kept.push_back(parent / name(::getppid(), "alive-1"));                       // a live worker's
    kept.push_back(parent / ("kbfleet-1-" + std::to_string(dead) + "-other-1"));  // another pid ns
  }
  for (const auto& d : stale) REQUIRE(std::filesystem::create_directory(d));
  for (const auto& d : kept) REQUIRE(std::filesystem::create_directory(d));
  // A handler's child that outlived its dead worker, still in the stale cgroup.
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t survivor = ::fork();
  REQUIRE(survivor >= 0);
  if (survivor == 0) {
    for (const auto& d : stale) std::ofstream(d / "cgroup.procs") << ::getpid() << std::flush;
    ::close(ready[0]);
    ::close(ready[1]);  // EOF: joined
    ::execl("/bin/sleep", "sleep", "100", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(ready[1]);
  char byte;
  REQUIRE(::read(ready[0], &byte, 1) == 0);
  ::close(ready[0]);
  REQUIRE(lists_pid((stale[0] / "cgroup.procs").string(), survivor));

  auto again = probe_cgroups();
  REQUIRE(again);
  int status = 0;
  REQUIRE(::waitpid(survivor, &status, 0) == survivor);
  CHECK(killed_by_sigkill(status));
  for (const auto& d : stale) CHECK_FALSE(std::filesystem::exists(d));
  for (const auto& d : kept) {
    CHECK(std::filesystem::exists(d));
    ::rmdir(d.c_str());
  }
}

}  // namespace
}  // namespace kbfleet::worker
