// The broker side of the journal: task <-> record, group commit at the end of each loop turn,
// recovery at start (queued tasks requeued in order, running ones wait for their worker for a
// grace period) and compaction of finished tasks after their retention.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/broker.hpp"

namespace kbfleet::broker {

using protocol::Writer;
namespace state = protocol::state;

namespace {

// Journal rows deleted per timer tick, plus as many as the store forgot in that tick.
constexpr std::size_t kCompactBatch = 2000;
// Floor of the default re-attach grace: a worker re-sends an unacknowledged result every 2 s
// (kResultResend in worker/worker.cpp) and does not list a task whose result is pending in its
// `ready`, so a shorter grace would retry tasks whose result is on its way.
constexpr std::int64_t kMinDefaultGraceMs = 5000;

// Task `t` as journalled, viewing its own strings, `id` and the bytes encoded into `w` (the
// broker's kept writers): valid until the next call with the same writers, and no string copied.
TaskRecordRef record_of(const Task& t, bool with_request, const TaskIdHex& id, Broker::JournalWriters& w) {
  TaskRecordRef r;
  r.id = id.view();
  if (with_request) {
    w.request.reset();
    w.request.begin_map();
    t.request.ref().encode(w.request);
    w.request.end_map();
    r.request = w.request.bytes();
    r.idempotency_key = t.request.idempotency_key();
    r.submitted_ms = t.submitted_ms;
  }
  r.state = t.state.name();
  r.attempt = t.attempt;
  r.worker = t.run().worker;
  r.worker_name = t.run().worker_name;
  r.version = t.run().version;
  r.started_ms = t.run().started_ms;
  r.finished_ms = t.run().finished_ms;
  r.next_seq = t.run().next_seq;
  r.max_attempts = t.max_attempts;
  r.retry_of = t.run().retry_of;
  r.tenant = t.tenant.view();
  r.row = t.journal_row;
  r.cancel_requested = t.cancel_requested;
  if (t.run().outcome) {
    w.outcome.reset();
    w.outcome.begin_map();
    t.run().outcome->encode(w.outcome);
    w.outcome.end_map();
    r.outcome = w.outcome.bytes();
  }
  w.artifacts.reset();
  w.artifacts.begin_map().key("artifacts").begin_array();  // most tasks: none, the same 12 bytes
  for (const auto& m : t.run().artifacts) {
    w.artifacts.begin_map();
    m.encode(w.artifacts);
    w.artifacts.end_map();
  }
  w.artifacts.end_array().end_map();
  r.artifacts = w.artifacts.bytes();
  return r;
}

std::vector<protocol::ArtifactMeta> artifacts_of(const std::string& blob) {
  std::vector<protocol::ArtifactMeta> out;
  auto body = protocol::Body::decode(blob);
  if (!body) return out;
  auto list = body->view().array_or_empty("artifacts");
  if (!list) return out;
  for (const auto* a : *list) {
    if (a->type != msgpack::type::MAP) continue;
    if (auto m = protocol::ArtifactMeta::decode(protocol::MapView(a))) out.push_back(std::move(*m));
  }
  return out;
}

}  // namespace

Status Broker::recover() {
  std::vector<Task*> finished;
  std::size_t records = 0;
  auto st = journal_->load([&](TaskRecord&& r) {
    ++records;
    restore_task(std::move(r), finished);
  });
  if (!st) return st;
  if (const auto ignored = journal_->ignored_outcomes(); ignored > 0) {
    metrics_.journal_errors.Increment(static_cast<double>(ignored));
    spdlog::error("journal outcomes ignored: their row holds another task outcomes={}", ignored);
  }
  // The retention clock of recovered tasks runs from their journalled finish time.
  std::stable_sort(finished.begin(), finished.end(), [](const Task* a, const Task* b) { return a->run().finished_ms < b->run().finished_ms; });
  for (Task* t : finished) tasks_.mark_finished(*t, t->run().finished_ms);
  if (!orphans_.empty()) {
    const std::int64_t grace = options_.reattach_grace_ms > 0
                                   ? options_.reattach_grace_ms
                                   : std::max(2 * options_.liveness * options_.heartbeat_ms, kMinDefaultGraceMs);
    reattach_deadline_ = Clock::now() + std::chrono::milliseconds(grace);
  }
  spdlog::info("journal recovered path={} durability={} records={} queued={} running={} finished={} reattach_wait={}",
               journal_->path(), durability_name(options_.durability), records, queued_, orphans_.size(),
               finished.size(), orphans_.empty() ? "none" : "pending");
  expire_finished();
  return {};
}

void Broker::restore_task(TaskRecord&& r, std::vector<Task*>& finished) {
  auto body = protocol::Body::decode(r.request);
  auto request = body ? protocol::SubmitRequest::decode(body->view()) : tl::unexpected(body.error());
  const auto state = TaskState::parse(r.state);
  if (!valid_task_id(r.id) || !request || !state) {
    metrics_.journal_errors.Increment();
    spdlog::error("journal record skipped task={} error=\"{}\"", r.id,
                  !request ? request.error().message : !state ? "unknown state " + r.state : "invalid task id");
    return;
  }
  Task& t = tasks_.restore(r.id, std::move(*request));
  t.state = *state;
  t.attempt = static_cast<std::int32_t>(r.attempt);
  t.submitted_ms = r.submitted_ms;
  t.max_attempts = static_cast<std::int32_t>(r.max_attempts);
  t.tenant = tasks_.name(r.tenant);
  t.journal_row = r.row;
  t.cancel_requested = r.cancel_requested;
  metrics_.recovered.increment(std::string(t.state == state::kRetrying ? state::kQueued : t.state.name()));
  // A task that never left the queue has no run record (and gets none here).
  if (r.started_ms != 0 || r.finished_ms != 0 || r.next_seq > 1 || !r.retry_of.empty() || t.state != state::kQueued) {
    TaskRun& run = t.mutable_run();
    run.worker = r.worker;
    run.worker_name = r.worker_name;
    run.version = r.version;
    run.started_ms = r.started_ms;
    run.finished_ms = r.finished_ms;
    run.retry_of = r.retry_of;
    run.artifacts = artifacts_of(r.artifacts);
    if (secure()) {
      for (const auto& a : run.artifacts) tenant_blobs_.insert(blob_owner_key(t.tenant.str(), a.sha256));
    }
    run.started_at = Clock::now();
    // The event backlog is not journalled: numbering continues after the last journalled seq, and
    // a finished task replays its terminal error/done events with their original numbers.
    run.first_seq = run.next_seq = std::max<std::int64_t>(r.next_seq, 1);
  }

  if (t.state.terminal()) {
    TaskRun& run = t.mutable_run();
    if (auto ob = protocol::Body::decode(r.outcome)) {
      if (auto o = protocol::TaskOutcome::decode(ob->view())) run.outcome = std::make_unique<protocol::TaskOutcome>(std::move(*o));
    }
    if (run.outcome) {
      const bool has_error = !run.outcome->error_code.empty();
      run.first_seq = run.next_seq = std::max<std::int64_t>(run.next_seq - (has_error ? 2 : 1), 1);
      if (has_error) {
        tasks_.append_event(t, protocol::event::kError,
                            Writer().begin_map().kv("code", run.outcome->error_code).kv("message", run.outcome->error_message).end_map().take(),
                            run.finished_ms);
      }
      Writer done;
      done.begin_map();
      run.outcome->encode(done);
      done.end_map();
      tasks_.append_event(t, protocol::event::kDone, done.take(), run.finished_ms);
    }
    finished.push_back(&t);
    return;
  }
  if (t.state == state::kRunning) {
    // Its worker may still run it: wait for its `ready` (re-attach) or `result` until the grace
    // period ends (expire_orphans), then retry or dead-letter it like a task of a lost worker.
    t.orphaned = true;
    count_running(t, +1);
    orphans_.push_back(t.id().str());
    return;
  }
  // queued, or retrying (its backoff restarts now): back into the queue in submission order.
  t.state = TaskState::of(state::kQueued);
  if (!t.run().worker.empty()) t.mutable_run().worker.clear();
  count_queued(t, +1);
  queue_.push(queue_key(t.request.plugin, t.request.version), t.request.priority, t.key, t.tenant.str());
}

Status Broker::journal_insert(Task& t) {
  if (!journal_) return {};
  // Written at the end of the turn with the state the turn left it in (commit_turn): a task
  // submitted and dispatched in one turn is one INSERT, not an INSERT and an UPDATE.
  created_this_turn_.insert(t.key);
  mark_dirty(t);
  return {};
}

void Broker::acknowledge_created(const std::string& peer, std::int64_t req, const Task& t, std::string type,
                                 std::string body) {
  Outgoing out;
  out.peer = peer;
  out.type = std::move(type);
  out.body = std::move(body);
  out.task_id = rollback_id(t);
  out.ack = true;
  out.req = req;
  send_or_hold(std::move(out));
}

std::string Broker::rollback_id(const Task& t) const {
  // Only a task not yet in the journal (journal_row 0) can be rolled back at this turn's commit.
  return journal_ && t.journal_row == 0 ? t.id().str() : std::string();
}

void Broker::mark_dirty(Task& t) {
  // A flag in the task rather than a set: no hashing or node allocation per transition.
  if (journal_ && !t.journal_dirty) {
    t.journal_dirty = true;
    dirty_.push_back(t.key);
  }
}

void Broker::on_journal_failure(const Error& e) {
  turn_failed_ = true;
  metrics_.journal_errors.Increment();
  if (journal_probing_) {
    spdlog::warn("journal write still failing path={} error=\"{}\"", journal_->path(), e.message);
  } else if (!journal_error_) {
    spdlog::error("journal write failed: new submissions are refused until it works again path={} error=\"{}\"",
                  journal_->path(), e.message);
  }
  journal_probing_ = false;
  journal_error_ = Error{ErrorCode::kIoError,
                         "journal write failed: " + e.message + "; check disk space and permissions of --data " +
                             options_.data_dir + " (the task was not accepted; submit it again)",
                         {}};
}

void Broker::commit_turn() {
  if (journal_) {
    for (const auto& key : dirty_) {
      if (turn_failed_) break;
      if (Task* t = tasks_.find(key)) {
        t->journal_dirty = false;
        if (created_this_turn_.count(key) > 0) {
          auto row = journal_->insert(record_of(*t, /*with_request=*/true, t->id(), journal_writers_));
          if (row) t->journal_row = *row;
          if (!row) on_journal_failure(row.error());
        } else {
          auto st = journal_->update(record_of(*t, /*with_request=*/false, t->id(), journal_writers_));
          if (!st) on_journal_failure(st.error());
        }
      }
    }
    const std::size_t records = journal_->pending_records();
    if (!turn_failed_) {
      auto started = Clock::now();
      if (auto st = journal_->commit(); !st) {
        on_journal_failure(st.error());
      } else if (records > 0) {
        metrics_.journal_commits.Increment();
        metrics_.journal_records.Increment(static_cast<double>(records));
        metrics_.journal_commit_time.Observe(std::chrono::duration<double>(Clock::now() - started).count());
        if (journal_error_ || journal_probing_) {
          spdlog::info("journal writable again; accepting submissions path={}", journal_->path());
        }
        journal_error_.reset();
        journal_probing_ = false;
      }
    }
    if (turn_failed_) {
      journal_->rollback();
      // Tasks created this turn were never durable: answer their submitters IO_ERROR, drop what
      // was about to be sent about them and forget them. Updates of older tasks stay dirty and
      // are written again next turn.
      std::vector<Outgoing> keep;
      for (auto& o : outbox_) {
        const auto key = parse_task_key(o.task_id);  // set only while a creation could roll back
        if (!key || !created_this_turn_.count(*key)) {
          keep.push_back(std::move(o));
        } else if (o.ack) {
          metrics_.rejected.increment(std::string(code_name(ErrorCode::kIoError)));
          Writer w;
          w.begin_map();
          protocol::encode_error(w, o.req, *journal_error_);
          w.end_map();
          Outgoing err;
          err.peer = o.peer;
          err.type = std::string(protocol::msg::kError);
          err.body = w.take();
          keep.push_back(std::move(err));
        }
      }
      outbox_ = std::move(keep);
      for (const auto& key : created_this_turn_) {
        Task* t = tasks_.find(key);
        if (t == nullptr) continue;
        if (t->state == state::kQueued) count_queued(*t, -1);
        if (t->state == state::kRunning) {
          count_running(*t, -1);
          if (WorkerInfo* w = workers_.find(t->run().worker)) workers_.release(*w, t->key);
        }
        tasks_.erase(key);  // its queue entry is discarded lazily
      }
      std::erase_if(dirty_, [&](const TaskKey& key) {
        Task* t = tasks_.find(key);
        if (t != nullptr) t->journal_dirty = true;  // written again next turn
        return t == nullptr;
      });
    } else {
      dirty_.clear();
    }
    created_this_turn_.clear();
    turn_failed_ = false;
  }
  coalesce_outbox();
  for (auto& o : outbox_) send_now(o);
  outbox_.clear();
  // After the replies: when the checkpoint thread has just finished a pass, copy the tail it
  // could not (committed while it ran), so the next commit can restart the WAL.
  if (journal_ && !journal_error_) {
    if (auto st = journal_->finish_checkpoint(); !st) {
      spdlog::warn("journal checkpoint failed path={} error=\"{}\"", journal_->path(), st.error().message);
    }
  }
}

void Broker::expire_orphans(Clock::time_point now) {
  if (!reattach_deadline_ || now < *reattach_deadline_) return;
  reattach_deadline_.reset();
  std::size_t lost = 0;
  for (const auto& id : orphans_) {
    Task* t = tasks_.find(id);
    if (t == nullptr || !t->orphaned || t->state != state::kRunning) continue;
    t->orphaned = false;
    const std::string worker = t->run().worker_name;
    t->mutable_run().worker.clear();
    lose_task(*t, worker, "not re-attached within the grace period after a broker restart");
    ++lost;
  }
  spdlog::info("re-attach grace period over recovered_running={} not_reattached={}", orphans_.size(), lost);
  orphans_.clear();
  orphans_.shrink_to_fit();
  update_gauges();
}

void Broker::compact_journal(std::size_t forgotten) {
  if (!journal_ || journal_error_) return;
  if (auto st = journal_->checkpoint_passive(); !st) {
    // Not fatal: the WAL keeps the data; the next tick tries again.
    spdlog::warn("journal checkpoint failed path={} error=\"{}\"", journal_->path(), st.error().message);
  }
  // The rows of tasks the store has forgotten (after their retention time, or beyond
  // --retention-max-tasks), at least as many per tick as were forgotten, so deletion keeps pace.
  auto n = journal_->compact(tasks_.forgotten_through_ms(protocol::now_ms()), kCompactBatch + forgotten);
  if (!n) return on_journal_failure(n.error());
  if (*n > 0) {
    metrics_.journal_compacted.Increment(static_cast<double>(*n));
    spdlog::debug("journal compacted tasks={}", *n);
  }
}

}  // namespace kbfleet::broker
