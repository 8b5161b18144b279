#include "bench/launch/launch_loop.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "common/manifest/registry.hpp"
#include "worker/sandbox/probe.hpp"
#include "worker/sandbox/uid_range_lock.hpp"
#include "worker/sandbox/workspace_fs.hpp"
#include "worker/task/attempt.hpp"

extern char** environ;

namespace kbfleet::bench {
namespace {

using namespace kbfleet::worker;
using Clock = std::chrono::steady_clock;

// What kbfleet-worker's main() and Worker::create() give the tasks of a worker with one slot,
// including a task uid of this loop's own (a block taken as a worker without --task-uid-base
// takes it, held in `uid_lock` for the loop's life), so loops run as different uids, as workers do.
WorkerPolicy worker_policy(const LoopSpec& spec, std::optional<UidRangeLock>& uid_lock, std::string& error) {
  ProbeOptions probe;
  probe.init = spec.init;
  probe.slots = 1;
  if (::geteuid() == 0) {
    auto lock = UidRangeLock::take_first_free(probe.slots);
    if (lock) {
      probe.uid_base = lock->base();
      uid_lock = std::move(*lock);
    } else {
      error = lock.error().to_string();
    }
  }
  WorkerPolicy policy;
  policy.layers = probe_sandbox(probe);
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos) policy.host_env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  policy.sandbox_root = spec.work_dir / ".sandbox-root";
  std::filesystem::create_directories(policy.sandbox_root);
  return policy;
}

// Supervises the handler as the worker's poll loop does: its pipes and pidfd, its deadlines.
void supervise(TaskRun& run) {
  std::vector<pollfd> fds;
  for (;;) {
    auto next_ms = run.process->on_tick(run, Clock::now());
    if (run.process->finished()) return;
    fds.clear();
    for (int fd : run.process->poll_fds()) fds.push_back({fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), static_cast<int>(next_ms < 0 ? 100 : std::min<std::int64_t>(next_ms, 100)));
    for (const auto& p : fds) {
      if (p.revents != 0) run.process->on_ready(p.fd, run);
    }
    if (run.process->finished()) return;
  }
}

protocol::TaskAssignment assignment(const LoopSpec& spec, std::int64_t n) {
  protocol::TaskAssignment task;
  char id[33];
  std::snprintf(id, sizeof id, "%08x%08x%016llx", static_cast<unsigned>(::getpid()), static_cast<unsigned>(spec.index),
                static_cast<unsigned long long>(n));
  task.task_id = id;
  task.plugin = spec.plugin;
  task.handler = spec.handler;
  return task;
}

// One attempt, start to retired. Empty on success, else why it failed.
std::string one_attempt(const LoopSpec& spec, const manifest::Registry& plugins, const WorkerPolicy& policy,
                        std::int64_t n) {
  TaskRun run(assignment(spec, n));
  run.slot = 0;
  auto started = start_attempt(run, plugins, policy, spec.work_dir);
  if (!started) {
    retire_attempt(run);
    return started.error().error.to_string();
  }
  supervise(run);
  finish_attempt(run);
  retire_attempt(run);
  if (run.outcome.state != protocol::state::kSucceeded) return run.outcome.state + ": " + run.outcome.error_message;
  return {};
}

}  // namespace

LoopResult run_launch_loop(const LoopSpec& spec, const std::function<void()>& ready) {
  LoopResult r;
  std::filesystem::create_directories(spec.work_dir);
  std::optional<UidRangeLock> uid_lock;
  const WorkerPolicy policy = worker_policy(spec, uid_lock, r.first_error);
  auto plugins = manifest::Registry::scan(spec.plugins);
  if (!plugins && r.first_error.empty()) r.first_error = plugins.error().to_string();
  std::string missing;
  for (const auto& l : policy.layers.missing()) missing += (missing.empty() ? "" : ",") + l;
  if (!missing.empty()) {
    r.first_error = "kbfleet-launch-bench needs every sandbox layer (run as root); missing: " + missing;
    r.layers_missing = true;
  }
  ready();
  if (!r.first_error.empty()) return r;

  const auto begin = Clock::now();
  const auto start = begin + std::chrono::microseconds(static_cast<std::int64_t>(spec.warmup_s * 1e6));
  const auto end = start + std::chrono::microseconds(static_cast<std::int64_t>(spec.seconds * 1e6));
  for (std::int64_t n = 0;; ++n) {
    const auto t0 = Clock::now();
    if (t0 >= end) break;
    std::string error = one_attempt(spec, *plugins, policy, n);
    const auto t1 = Clock::now();
    if (!error.empty()) {
      if (r.first_error.empty()) r.first_error = error;
      ++r.failed;
      continue;
    }
    if (t1 >= start && t1 < end) ++r.completed;
    if (t0 >= start && t1 < end) r.latency_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  wait_workspaces_retired();
  return r;
}

}  // namespace kbfleet::bench
