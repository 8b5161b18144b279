// Dispatch: queued tasks go to workers with credit (free slots) that serve their queue key;
// results free the slot and pull the next task; a lost worker fails its tasks (WORKER_LOST).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <unordered_map>

#include "broker/broker.hpp"

namespace kbfleet::broker {

using protocol::Writer;
namespace msg = protocol::msg;
namespace state = protocol::state;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// NO_CAPABLE_WORKER for a task of `plugin` (`version` empty = any) that waited `waited`.
Error no_capable_worker(const PluginLookup& l, const std::string& plugin, const std::string& version,
                        std::chrono::milliseconds waited) {
  const std::string what = version.empty() ? plugin : plugin + "@" + version;
  const std::string after = " within " + std::to_string(waited.count()) + " ms (--no-capable-worker-ms)";
  if (l.ungranted.empty()) {
    return Error{ErrorCode::kNoCapableWorker,
                 "no connected worker offered plugin '" + what + "'" + after +
                     "; start a worker whose --plugins directory holds it (`kbfleet workers` lists what is offered)",
                 {{"plugin", what}}};
  }
  std::string missing;
  std::string grants;
  for (const auto& cap : l.ungranted) {
    missing += (missing.empty() ? "" : ", ") + cap;
    // Not granted by hand: a worker that enforces net allow-lists has it (protocol/messages.hpp).
    grants += cap == protocol::kNetAllowCapability ? " --task-net CIDR (it enforces the plugin's net allow-list)" : " --grant " + cap;
  }
  return Error{ErrorCode::kNoCapableWorker,
               "no connected worker granted the capabilities plugin '" + what + "' requires (missing: " + missing + ")" +
                   after + "; start a worker with" + grants,
               {{"plugin", what}, {"missing", missing}}};
}

}  // namespace

void Broker::dispatch_key(const std::string& key) {
  if (queue_.empty_for(key)) return;
  // The candidates go in a buffer kept between calls (moved out, so a nested call cannot
  // overwrite it while it is walked; it would only allocate a buffer of its own).
  std::vector<WorkerInfo*> candidates = std::move(credit_candidates_);
  workers_.with_credit_for(key, candidates);
  for (WorkerInfo* w : candidates) {
    dispatch_worker(*w);
    if (queue_.empty_for(key)) break;
  }
  credit_candidates_ = std::move(candidates);
}

void Broker::dispatch_worker(WorkerInfo& w) {
  if (stopping_) return;  // queued tasks stay in the journal for the next broker
  auto alive = [this](const TaskKey& id) {
    const Task* t = tasks_.find(id);
    return t != nullptr && t->state == state::kQueued;
  };
  // Per-tenant max_running (CURVE mode): a tenant at its limit is skipped, not blocking others.
  std::function<bool(const std::string&)> eligible;
  if (secure()) eligible = [this](const std::string& tenant) { return tenant_may_start(tenant); };
  while (w.free > 0 && !w.draining) {
    auto id = queue_.pop_best(w.keys, alive, eligible);
    if (!id) return;
    start_task(w, *tasks_.find(*id));
  }
}

void Broker::start_task(WorkerInfo& w, Task& t) {
  count_queued(t, -1);
  count_running(t, +1);
  t.state = TaskState::of(state::kRunning);
  ++t.attempt;
  TaskRun& run = t.mutable_run();
  run.worker = w.routing_id;
  run.worker_name = w.ready.worker_id;
  run.started_ms = protocol::now_ms();
  run.started_at = Clock::now();
  for (const auto& p : w.ready.plugins) {
    if (p.id == t.request.plugin && p.error_code.empty() &&
        (t.request.version.empty() || p.version == t.request.version)) {
      run.version = p.version;
      break;
    }
  }
  workers_.assign(w, t.key);
  metrics_.queue_wait.Observe(seconds_between(t.queued_at, run.started_at));

  Writer body;
  body.begin_map();
  protocol::TaskAssignmentRef{t.id().view(), t.attempt, t.request.plugin, run.version, t.request.handler, t.request.input,
                              t.request.env(), t.request.timeout_ms}
      .encode(body);
  body.end_map();
  Outgoing out;
  out.peer = w.routing_id;
  out.type = std::string(msg::kTask);
  out.body = body.take();
  out.task_id = rollback_id(t);
  send_or_hold(std::move(out));
  emit(t, protocol::event::kStarted,
       Writer().begin_map().kv("worker", w.ready.worker_id).kv("attempt", t.attempt).kv("version", run.version).end_map().take());
  spdlog::debug("task dispatched task={} worker={} attempt={}", t.id().view(), w.ready.worker_id, t.attempt);
}

void Broker::finish_task(Task& t, protocol::TaskOutcome outcome) {
  if (t.state == state::kRunning) {
    count_running(t, -1);
    // Idle workers may have skipped this tenant at its max_running: offer them its tasks again.
    if (secure() && allow_->policy(t.tenant.str()).max_running > 0) redispatch_ = true;
    metrics_.run_time.Observe(seconds_between(t.run().started_at, Clock::now()));
    if (WorkerInfo* w = workers_.find(t.run().worker)) workers_.release(*w, t.key);
  }
  // A cancel that raced with completion: the handler's own outcome stands, as reported.
  t.state = TaskState::of(outcome.state);  // TaskOutcome::decode accepts only terminal states
  t.mutable_run().worker.clear();
  metrics_.finished.increment(outcome.state, outcome.error_code);
  if (!outcome.error_code.empty()) {
    emit(t, protocol::event::kError,
         Writer().begin_map().kv("code", outcome.error_code).kv("message", outcome.error_message).end_map().take());
  }
  Writer done;
  done.begin_map();
  outcome.encode(done);
  done.end_map();
  t.mutable_run().outcome = std::make_unique<protocol::TaskOutcome>(std::move(outcome));
  emit(t, protocol::event::kDone, done.take());
  tasks_.mark_finished(t, protocol::now_ms());
  spdlog::debug("task finished task={} state={}", t.id().view(), t.state.name());
}

void Broker::fail_task(Task& t, std::string_view final_state, const Error& e) {
  protocol::TaskOutcome o;
  o.state = std::string(final_state);
  o.error_code = std::string(code_name(e.code));
  o.error_message = e.message;
  finish_task(t, std::move(o));
}

void Broker::worker_lost(const std::string& routing_id, std::string_view why) {
  WorkerInfo* w = workers_.find(routing_id);
  if (w == nullptr) return;
  std::string name = w->ready.worker_id;
  auto running = workers_.remove(routing_id);
  worker_keys_.erase(routing_id);  // its routing id may be used by another worker key now
  metrics_.workers_lost.Increment();
  spdlog::warn("worker lost worker={} reason=\"{}\" tasks={}", name, why, running.size());
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    it = it->second.worker == routing_id ? uploads_.erase(it) : std::next(it);
  }
  for (const auto& id : running) {
    Task* t = tasks_.find(id);
    if (t != nullptr && t->state == state::kRunning) lose_task(*t, name, why);
  }
  update_gauges();
}

void Broker::lose_task(Task& t, const std::string& worker_name, std::string_view why) {
  const std::string what = "worker " + worker_name + " was lost while running attempt " + std::to_string(t.attempt) +
                           " (" + std::string(why) + ")";
  if (t.cancel_requested) return fail_task(t, state::kCancelled, Error{ErrorCode::kCancelled, what, {}});
  if (t.attempt >= t.max_attempts) {
    return fail_task(t, state::kDeadLetter,
                     Error{ErrorCode::kWorkerLost,
                           what + "; no attempts left (" + std::to_string(t.max_attempts) +
                               " allowed). `kbfleet retry " + t.id().str() + "` submits it again",
                           {{"attempts", std::to_string(t.attempt)}}});
  }
  // Exponential backoff with +-20 % jitter, so tasks of a lost worker do not stampede back.
  count_running(t, -1);
  metrics_.run_time.Observe(std::chrono::duration<double>(Clock::now() - t.run().started_at).count());
  t.state = TaskState::of(state::kRetrying);
  t.mutable_run().worker.clear();
  const std::int64_t base = std::min<std::int64_t>(options_.retry_backoff_ms << std::min<std::int64_t>(t.attempt - 1, 10),
                                                   30000);
  const std::int64_t jitter = base / 5;
  const std::int64_t delay = base - jitter + static_cast<std::int64_t>(std::hash<std::string>{}(t.id().str() + std::to_string(t.attempt)) %
                                                                       static_cast<std::uint64_t>(2 * jitter + 1));
  retry_due_.emplace(Clock::now() + std::chrono::milliseconds(delay), t.id().str());
  metrics_.retries.Increment();
  emit(t, protocol::event::kRetry,
       Writer().begin_map().kv("attempt", t.attempt + 1).kv("reason", what).kv("delay_ms", delay).end_map().take());
  spdlog::warn("task retry scheduled task={} next_attempt={} delay_ms={}", t.id().view(), t.attempt + 1, delay);
}

void Broker::requeue_due_retries(Clock::time_point now) {
  while (!retry_due_.empty() && retry_due_.top().first <= now) {
    std::string id = retry_due_.top().second;
    retry_due_.pop();
    Task* t = tasks_.find(id);
    if (t == nullptr || t->state != state::kRetrying) continue;
    t->state = TaskState::of(state::kQueued);
    t->queued_at = now;
    count_queued(*t, +1);
    const std::string key = queue_key(t->request.plugin, t->request.version);
    queue_.push(key, t->request.priority, t->key, t->tenant.str());
    dispatch_key(key);
  }
}

void Broker::fail_tasks_without_capable_worker(Clock::time_point now) {
  using std::chrono::milliseconds;
  if (options_.no_capable_worker_ms <= 0 || now < next_capable_sweep_) return;
  const milliseconds limit(options_.no_capable_worker_ms);
  next_capable_sweep_ = now + std::clamp(limit / 4, milliseconds(10), milliseconds(1000));
  // Keys nobody serves keep the time they were first seen so; a key served again starts over.
  std::unordered_map<std::string, Clock::time_point> since;
  for (const auto& key : queue_.keys()) {
    if (workers_.serves(key)) continue;
    auto it = no_capable_since_.find(key);
    const Clock::time_point from = it != no_capable_since_.end() ? it->second : now;
    since.emplace(key, from);
    if (now - from < limit) continue;
    const auto cutoff = now - limit;  // a task waits from max(its queued_at, from)
    auto taken = queue_.take_if(key, [&](const TaskKey& id) {
      const Task* t = tasks_.find(id);
      return t == nullptr || t->state != state::kQueued || t->queued_at <= cutoff;  // stale entries go too
    });
    std::size_t failed = 0;
    for (const auto& id : taken) {
      Task* t = tasks_.find(id);
      if (t == nullptr || t->state != state::kQueued) continue;
      count_queued(*t, -1);
      fail_task(*t, state::kFailed,
                no_capable_worker(workers_.lookup(t->request.plugin, t->request.version, t->request.handler),
                                  t->request.plugin.str(), t->request.version.str(), limit));
      ++failed;
    }
    if (failed > 0) spdlog::warn("tasks failed NO_CAPABLE_WORKER key={} tasks={}", key, failed);
  }
  no_capable_since_ = std::move(since);
}

}  // namespace kbfleet::broker
