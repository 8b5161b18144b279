// HandlerProcess: supervision of a launched handler from the worker's poll loop. launch.cpp
// starts the child; this file reads its pipes, enforces deadlines and limits, and reaps it.
#include "worker/executor/process.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>

#include "common/posix/fd.hpp"
#include "worker/executor/fd3_parser.hpp"
#include "worker/executor/launch.hpp"
#include "worker/executor/line_splitter.hpp"
#include "worker/sandbox/cgroup.hpp"
#include "worker/sandbox/init/init_status.hpp"

namespace kbfleet::worker {
namespace {

using Clock = std::chrono::steady_clock;

// After the main process is reaped (and its group killed), how long we keep reading pipes that
// something outside the group (a setsid escapee) may still hold open.
constexpr std::chrono::milliseconds kDrainAfterExit{500};
constexpr std::size_t kReadChunk = 64 * 1024;

// One read buffer per thread, shared by every handler that thread supervises: a read's bytes are
// consumed (copied into lines, events or the fd-3 parser) before the next read. A buffer per
// task was 64 KiB zero-filled and faulted in again for every task.
char* read_buffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kReadChunk]);
  return buf.get();
}

std::int64_t ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

// How long until the CPU budget is read again: the task cannot spend its remaining budget
// faster than all CPUs at once, so reading then misses nothing; bounded so a nearly spent budget
// is not polled in a busy loop and a large one is still checked every second.
std::chrono::milliseconds next_cpu_check(std::int64_t remaining_ms) {
  static const long cpus = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
  return std::chrono::milliseconds(std::clamp<std::int64_t>(remaining_ms / cpus, 10, 1000));
}

std::int64_t rusage_cpu_ms(const rusage& ru) {
  auto ms = [](const timeval& tv) {
    return static_cast<std::int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
  };
  return ms(ru.ru_utime) + ms(ru.ru_stime);
}

}  // namespace

struct HandlerProcess::State {
  State(Launched launched, const Limits& lim, std::shared_ptr<TaskCgroup> cg, std::filesystem::path ws,
        Clock::time_point start)
      : limits(lim),
        workspace(std::move(ws)),
        cgroup(std::move(cg)),
        pid(launched.pid),
        pidfd(std::move(launched.pidfd)),
        out(std::move(launched.stdout_read)),
        err(std::move(launched.stderr_read)),
        fd3(std::move(launched.fd3_read)),
        init_status(std::move(launched.status_read)),
        under_init(static_cast<bool>(init_status)),
        mount_ns(std::move(launched.mount_ns)),
        started(start) {
    if (limits.timeout_ms > 0) timeout_at = start + std::chrono::milliseconds(limits.timeout_ms);
    // With a cgroup that accounts CPU, quotas.cpuMs is the whole task's budget (RLIMIT_CPU,
    // set by the launcher, only caps each process on its own).
    if (limits.cpu_ms > 0 && cgroup && cgroup->cpu_usage_ms()) cpu_check_at = start + next_cpu_check(limits.cpu_ms);
  }

  void reap();
  void take_handler_status();
  void read_pipe(posix::Fd& fd, Sink& sink);
  void take_output(LineSplitter& lines, std::string_view bytes, Sink& sink);
  void end_of_pipe(posix::Fd& fd, Sink& sink);
  void stop(EndReason reason, Clock::time_point now);
  void check_cpu_budget(Clock::time_point now);
  void kill_group();
  void maybe_finish();
  void fill_outcome();
  bool workspace_full() const;

  Limits limits;
  std::filesystem::path workspace;
  std::shared_ptr<TaskCgroup> cgroup;  // null without the cgroup layer
  int pid;
  posix::Fd pidfd;
  posix::Fd out, err, fd3;
  posix::Fd init_status;  // kbfleet-init's records, when the handler runs under it
  const bool under_init;  // the handler runs under kbfleet-init, in a pid namespace of its own
  NsHold mount_ns;        // the task's mount namespace, released when the run is dropped
  LineSplitter out_lines{Stream::kStdout};
  LineSplitter err_lines{Stream::kStderr};
  Fd3Parser fd3_parser;
  Clock::time_point started;
  std::optional<Clock::time_point> timeout_at;   // SIGTERM then
  std::optional<Clock::time_point> kill_at;      // SIGKILL then (end of the grace period)
  std::optional<Clock::time_point> drain_until;  // stop waiting for pipe EOF then
  std::optional<Clock::time_point> cpu_check_at; // read the cgroup's CPU usage then
  std::optional<EndReason> stop_reason;          // set when we ended the handler
  bool reaped = false;
  bool status_known = false;
  int status = 0;
  bool finished = false;
  std::int64_t output_bytes = 0;
  bool output_over = false;
  ProcessOutcome outcome;
};

// Kills the whole group, and the whole cgroup, which also holds what left the group (setsid).
// Only called while the main process is unreaped: even as a zombie it pins its pid, so the group
// id cannot have been recycled for someone else's group.
void HandlerProcess::State::kill_group() {
  ::kill(-pid, SIGKILL);
  if (cgroup) cgroup->kill_all();
}

void HandlerProcess::State::reap() {
  // Check first without reaping (WNOWAIT): an owner calling on_ready spuriously must not make us
  // kill a running handler, and the group kill below has to happen while the zombie still exists.
  siginfo_t info{};
  int rc;
  do {
    rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0 && info.si_pid == 0) return;  // still running

  rusage ru{};
  if (rc == 0) {
    // Stragglers in the group die with the main process. Under kbfleet-init, the kernel has
    // already killed every other process of the task's pid namespace and waited for them to be
    // released before init can be reaped (zap_pid_ns_processes), and a task process cannot
    // leave that namespace, so the cgroup holds nothing alive: its kill (a read of each
    // cgroup.procs) is left to the pool's thread, which kills whatever is left before it removes
    // the cgroup (cgroup_pool.hpp).
    if (under_init) {
      ::kill(-pid, SIGKILL);
    } else {
      kill_group();
    }
    pid_t got;
    do {
      got = ::wait4(pid, &status, 0, &ru);
    } while (got < 0 && errno == EINTR);
    status_known = got == pid;
    if (status_known && init_status) take_handler_status();
  }
  // Otherwise (ECHILD) someone else reaped it, e.g. the owner set SIGCHLD to SIG_IGN: the exit
  // status is lost (exit_code -1), and the group id may be recycled, so it is not signalled. The
  // cgroup holds only the task's processes whatever their pids, so it is still killed.
  if (rc != 0 && cgroup) cgroup->kill_all();
  auto now = Clock::now();
  outcome.wall_ms = ms_between(started, now);
  outcome.cpu_ms = status_known ? rusage_cpu_ms(ru) : 0;
  // The cgroup also counts processes nobody waited for (killed orphans, a setsid escapee; under
  // kbfleet-init the ones the kernel kills when init exits, which it reaps with SIGCHLD ignored,
  // so their CPU time never reaches init's rusage).
  if (cgroup) outcome.cpu_ms = std::max(outcome.cpu_ms, cgroup->cpu_usage_ms().value_or(0));
  outcome.max_rss_kb = status_known ? ru.ru_maxrss : 0;
  reaped = true;
  pidfd.reset();
  kill_at.reset();
  drain_until = now + kDrainAfterExit;
}

// The status init reported for the handler replaces init's own; init's rusage (which includes
// the reaped handler's) stays. Without a record (init was SIGKILLed) init's status is the truth.
void HandlerProcess::State::take_handler_status() {
  init::StatusRecord rec{};
  while (::read(init_status.get(), &rec, sizeof rec) == static_cast<ssize_t>(sizeof rec)) {
    if (rec.kind == init::StatusKind::kExited) status = rec.value;
  }
  init_status.reset();
}

void HandlerProcess::State::read_pipe(posix::Fd& fd, Sink& sink) {
  ssize_t n;
  do {
    n = ::read(fd.get(), read_buffer(), kReadChunk);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n <= 0) return end_of_pipe(fd, sink);  // EOF, or an error that ends the stream alike
  std::string_view bytes(read_buffer(), static_cast<std::size_t>(n));
  if (&fd == &out) return take_output(out_lines, bytes, sink);
  if (&fd == &err) return take_output(err_lines, bytes, sink);
  fd3_parser.feed(bytes, sink);
}

void HandlerProcess::State::take_output(LineSplitter& lines, std::string_view bytes, Sink& sink) {
  if (output_over) return;  // read to EOF, but deliver nothing past the cap
  std::int64_t cap = std::max<std::int64_t>(limits.output_bytes, 0);
  auto room = static_cast<std::size_t>(cap - output_bytes);
  if (bytes.size() <= room) {
    output_bytes += static_cast<std::int64_t>(bytes.size());
    return lines.feed(bytes, sink);
  }
  lines.feed(bytes.substr(0, room), sink);
  output_bytes = cap;
  output_over = true;
  if (!stop_reason) stop_reason = EndReason::kOutputLimit;
  if (!reaped) kill_group();
}

void HandlerProcess::State::end_of_pipe(posix::Fd& fd, Sink& sink) {
  if (&fd == &out) out_lines.finish(sink);
  if (&fd == &err) err_lines.finish(sink);
  if (&fd == &fd3) fd3_parser.finish(sink);
  fd.reset();
}

void HandlerProcess::State::stop(EndReason reason, Clock::time_point now) {
  if (reaped || stop_reason) return;
  stop_reason = reason;
  ::kill(-pid, SIGTERM);
  // A stopped member would hold SIGTERM pending until SIGKILL; let it handle it now (nsjail).
  ::kill(-pid, SIGCONT);
  kill_at = now + std::chrono::milliseconds(std::max<std::int64_t>(limits.kill_grace_ms, 0));
}

// The task's processes together used quotas.cpuMs: SIGKILL at once, as the kernel does at the
// hard RLIMIT_CPU (a grace period would be more CPU than the budget allows).
void HandlerProcess::State::check_cpu_budget(Clock::time_point now) {
  auto used = cgroup->cpu_usage_ms();
  if (!used) return cpu_check_at.reset();
  if (*used < limits.cpu_ms) {
    cpu_check_at = now + next_cpu_check(limits.cpu_ms - *used);
    return;
  }
  cpu_check_at.reset();
  stop_reason = EndReason::kCpuLimit;
  kill_group();
}

void HandlerProcess::State::maybe_finish() {
  if (finished || !reaped || out || err || fd3) return;
  fill_outcome();
  finished = true;
}

// Less than 64 KiB free in the size-limited workspace: what a handler that died of ENOSPC leaves.
bool HandlerProcess::State::workspace_full() const {
  struct statvfs st {};
  if (::statvfs(workspace.c_str(), &st) < 0) return false;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize < (64u << 10);
}

void HandlerProcess::State::fill_outcome() {
  bool signaled = status_known && WIFSIGNALED(status);
  if (status_known && WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
  if (signaled) outcome.signal = WTERMSIG(status);
  // A cgroup limit is the cause only if the handler failed: one that recovered from a failed fork
  // or lost a helper to the OOM killer and still exited 0 succeeded.
  bool failed = !(status_known && WIFEXITED(status) && outcome.exit_code == 0);
  if (stop_reason) {
    outcome.reason = *stop_reason;
  } else if (failed && cgroup && cgroup->oom_killed()) {
    outcome.reason = EndReason::kMemoryLimit;
  } else if (signaled && (outcome.signal == SIGXCPU ||
                          (outcome.signal == SIGKILL && limits.cpu_ms > 0 &&
                           outcome.cpu_ms >= limits.cpu_ms))) {
    // SIGXCPU at the soft RLIMIT_CPU; SIGKILL at the hard one if the handler ignored SIGXCPU.
    outcome.reason = EndReason::kCpuLimit;
  } else if (failed && cgroup && cgroup->pids_limit_hit()) {
    outcome.reason = EndReason::kPidsLimit;
  } else if (failed && limits.disk_mb > 0 && workspace_full()) {
    outcome.reason = EndReason::kDiskLimit;
  } else {
    outcome.reason = signaled ? EndReason::kSignaled : EndReason::kExited;
  }
}

Result<std::unique_ptr<HandlerProcess>> HandlerProcess::spawn(const LaunchSpec& spec) {
  auto start = Clock::now();
  auto launched = launch(spec);
  if (!launched) return tl::unexpected(launched.error());
  auto state = std::make_unique<State>(std::move(*launched), spec.limits, spec.cgroup, spec.workspace, start);
  return std::unique_ptr<HandlerProcess>(new HandlerProcess(std::move(state)));
}

HandlerProcess::HandlerProcess(std::unique_ptr<State> state) : s_(std::move(state)) {}

HandlerProcess::~HandlerProcess() {
  if (!s_ || s_->reaped) return;
  s_->kill_group();
  int status;
  while (::waitpid(s_->pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::vector<int> HandlerProcess::poll_fds() const {
  std::vector<int> fds;
  for (const posix::Fd* fd : {&s_->out, &s_->err, &s_->fd3, &s_->pidfd}) {
    if (*fd) fds.push_back(fd->get());
  }
  return fds;
}

void HandlerProcess::on_ready(int fd, Sink& sink) {
  if (fd < 0) return;
  if (s_->pidfd && fd == s_->pidfd.get()) {
    s_->reap();
  } else {
    for (posix::Fd* pipe : {&s_->out, &s_->err, &s_->fd3}) {
      if (*pipe && fd == pipe->get()) s_->read_pipe(*pipe, sink);
    }
  }
  s_->maybe_finish();
}

std::int64_t HandlerProcess::on_tick(Sink& sink, Clock::time_point now) {
  State& s = *s_;
  if (!s.reaped) {
    if (s.timeout_at && now >= *s.timeout_at) s.stop(EndReason::kTimeout, now);
    if (s.cpu_check_at && !s.stop_reason && now >= *s.cpu_check_at) s.check_cpu_budget(now);
    if (s.kill_at && now >= *s.kill_at) {
      s.kill_group();
      s.kill_at.reset();
    }
  } else if (!s.finished && s.drain_until && now >= *s.drain_until) {
    // Something outside the group holds the pipes open: deliver what we have and stop waiting.
    for (posix::Fd* pipe : {&s.out, &s.err, &s.fd3}) {
      if (*pipe) s.end_of_pipe(*pipe, sink);
    }
  }
  s.maybe_finish();

  std::optional<Clock::time_point> next;
  auto consider = [&](const std::optional<Clock::time_point>& t) {
    if (t && (!next || *t < *next)) next = t;
  };
  if (!s.reaped && !s.stop_reason) consider(s.timeout_at);
  if (!s.reaped && !s.stop_reason) consider(s.cpu_check_at);
  if (!s.reaped) consider(s.kill_at);
  if (s.reaped && !s.finished) consider(s.drain_until);
  if (!next) return -1;
  if (*next <= now) return 0;
  // Round up, so an owner sleeping this long wakes at or after the deadline, not just before.
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(*next - now).count();
  return (us + 999) / 1000;
}

void HandlerProcess::cancel() { s_->stop(EndReason::kCancelled, Clock::now()); }

bool HandlerProcess::finished() const { return s_->finished; }

const ProcessOutcome& HandlerProcess::outcome() const { return s_->outcome; }

int HandlerProcess::pid() const { return s_->pid; }

}  // namespace kbfleet::worker
