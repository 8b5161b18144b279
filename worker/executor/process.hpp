#pragma once
// HandlerProcess: one handler run as a child process, supervised from the worker's poll loop
// (no threads). The contract it enforces (docs/plugins.md, "Handler contract"):
//  - the child runs in its own process group, cwd = workspace, env exactly LaunchSpec::env,
//    stdin = the input bytes (a sealed memfd), stdout/stderr/fd 3 = pipes, every other fd closed;
//  - rlimits from the quotas: RLIMIT_CPU (cpu_ms per process, SIGXCPU -> CPU_LIMIT), RLIMIT_AS
//    (memory_mb, only when the spec has no task cgroup), RLIMIT_CORE 0, RLIMIT_NOFILE;
//  - with a task cgroup that accounts CPU (TaskCgroup::cpu_usage_ms), cpu_ms is also one budget
//    for all the task's processes together: polled from on_tick(), and once spent the whole
//    cgroup is SIGKILLed and the outcome is kCpuLimit;
//  - with a task cgroup (LaunchSpec::cgroup): the child joins it before exec, so the kernel
//    enforces memory_mb and pids on the task as a whole; every "kill the group" below also kills
//    the whole cgroup, which reaches processes that left the group with setsid; an OOM kill ends
//    kMemoryLimit, a failed handler that hit pids.max ends kPidsLimit;
//  - net kNone: the child enters a fresh network namespace with no interfaces before exec;
//  - timeout -> SIGTERM to the whole group -> kill_grace_ms -> SIGKILL of the whole group;
//  - output beyond output_bytes -> the group is killed and the outcome is kOutputLimit;
//  - when the main process exits, the rest of its group is killed (no stragglers).
// An exec or setup failure in the child is reported through a CLOEXEC pipe as an errno, so
// "could not start" (EXEC_FAILED; SANDBOX_UNAVAILABLE for joining the cgroup) is never mistaken
// for "handler failed".
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

inline constexpr std::size_t kMaxLineBytes = 8192;  // longer lines are split (partial = true)

struct Limits {
  std::int64_t timeout_ms = 30000;  // 0 = none
  std::int64_t cpu_ms = 0;          // 0 = none
  std::int64_t memory_mb = 0;       // 0 = none
  std::int64_t pids = 0;            // 0 = none; enforced by the task cgroup only, here for messages
  std::int64_t output_bytes = 8 << 20;
  std::int64_t max_open_files = 1024;
  std::int64_t kill_grace_ms = 2000;
  std::int64_t disk_mb = 0;  // > 0: the workspace is a filesystem of this size; full + failed = kDiskLimit
};

// kNone: the slot's empty network namespace (`net: none`); kAllowList: the slot's namespace of
// net_slots.hpp, with the task's allow-list loaded (Isolation::netns_fd).
enum class NetMode { kHost, kNone, kAllowList };

class TaskCgroup;       // worker/sandbox/cgroup.hpp
struct Isolation;       // worker/sandbox/isolation.hpp

struct LaunchSpec {
  std::filesystem::path exec;      // absolute path of the program
  std::vector<std::string> args;   // argv[1..]; argv[0] is exec
  std::vector<std::string> env;    // complete environment, "NAME=value"
  std::filesystem::path workspace; // cwd; must exist
  std::string stdin_bytes;         // the handler's stdin
  Limits limits;
  NetMode net = NetMode::kHost;
  // cgroup.procs files the child writes its pid to before exec: the task cgroup's procs_files().
  // A failure ends the spawn with SANDBOX_UNAVAILABLE (details step "cgroup"). With any, memory_mb
  // is the cgroup's to enforce and RLIMIT_AS is not set (it breaks runtimes that reserve address
  // space, e.g. the JVM, Go, ASan).
  std::vector<std::string> join_cgroups;
  // The task cgroup those files belong to, or null. The HandlerProcess keeps a reference to kill
  // the whole cgroup and read its OOM and pids events. Shared only so that LaunchSpec stays
  // copyable for callers passing it by const&: drop the caller's copy after spawn() so that the
  // HandlerProcess is the last owner, and the cgroup is removed when the HandlerProcess goes.
  std::shared_ptr<TaskCgroup> cgroup;
  // The sandbox layers (namespaces and new root, slot user, capabilities, Landlock, seccomp), or
  // null for a plain process (`sandbox: none`). With a new root the child is pid 1 of its own pid
  // namespace running kbfleet-init, and pid() is init's: killing it kills every task process.
  std::shared_ptr<const Isolation> isolation;
};

enum class Stream { kStdout, kStderr };

struct OutputLine {
  Stream stream;
  std::int64_t line;  // 1-based per stream; the pieces of a split line share the number
  std::string text;   // without the trailing newline
  bool partial;       // true if more of this line follows in the next piece
};

// Receives what a handler produces, in order. Called from on_ready()/on_tick()/finish.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void on_output(const OutputLine& line) = 0;
  virtual void on_progress(double progress, std::string_view message) = 0;
  virtual void on_result(std::string result_msgpack) = 0;   // fd 3 {"result": ...}
  virtual void on_fd3_invalid(std::string_view why) = 0;     // a bad fd-3 line (counted, not fatal)
};

// kMemoryLimit: the task cgroup saw an OOM kill and the handler did not exit 0. kPidsLimit: a fork
// in the task cgroup failed at pids.max and the handler did not exit 0.
// kDiskLimit: the workspace (limits.disk_mb) is full and the handler did not exit 0.
enum class EndReason {
  kExited, kSignaled, kTimeout, kOutputLimit, kCpuLimit, kCancelled, kMemoryLimit, kPidsLimit, kDiskLimit
};

struct ProcessOutcome {
  EndReason reason = EndReason::kExited;
  int exit_code = -1;  // when the main process exited normally
  int signal = 0;      // when it was killed by a signal
  std::int64_t cpu_ms = 0;      // user + system, from wait4
  std::int64_t max_rss_kb = 0;  // from wait4
  std::int64_t wall_ms = 0;
};

class HandlerProcess {
 public:
  // Starts the handler. EXEC_FAILED (details: errno, step) if the child could not exec;
  // SANDBOX_UNAVAILABLE (step "cgroup") if it could not join spec.join_cgroups; IO_ERROR if a
  // pipe, memfd or fork failed.
  [[nodiscard]] static Result<std::unique_ptr<HandlerProcess>> spawn(const LaunchSpec& spec);
  ~HandlerProcess();  // kills the group and the cgroup (SIGKILL) and reaps if still running

  // Fds the owner polls for readability: open output pipes and the pidfd. Changes over time.
  std::vector<int> poll_fds() const;
  // Handles readiness of one fd from poll_fds(): reads without blocking, feeds the sink.
  void on_ready(int fd, Sink& sink);
  // Enforces deadlines (timeout, kill grace, post-exit drain). Returns milliseconds until the
  // next deadline, or -1 if none; the owner uses it as (an upper bound of) its poll timeout.
  std::int64_t on_tick(Sink& sink, std::chrono::steady_clock::time_point now);
  // Cancels: SIGTERM to the group now, SIGKILL to the group and cgroup after kill_grace_ms;
  // outcome kCancelled.
  void cancel();
  // True once the main process is reaped and the output pipes are closed (or given up on).
  bool finished() const;
  const ProcessOutcome& outcome() const;  // valid when finished()
  int pid() const;

 private:
  struct State;
  explicit HandlerProcess(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace kbfleet::worker
