#pragma once
// Every task the broker accepted: its request, state, outcome, artifacts and a bounded backlog of
// its events (so a late or gapped subscriber can replay from seq 1). Finished tasks are kept for
// a retention time, then forgotten in finish order (O(1) amortised per task).
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "broker/tasks/slab.hpp"
#include "broker/tasks/stored_request.hpp"
#include "broker/tasks/task_index.hpp"
#include "broker/tasks/task_key.hpp"
#include "broker/tasks/task_state.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

// 128 random bits as 32 lowercase hex characters (new_task_key()).
std::string new_task_id();
bool valid_task_id(std::string_view id);

// A task's replayable events, oldest first: a vector with a moving head, so an empty backlog
// (every queued task) costs no allocation and trimming the oldest event is amortised O(1).
// Each event is a ZeroMQ message: publishing it to each topic copies a reference, not the bytes
// (zmq_msg_copy), so the backlog and every frame share one buffer (docs/performance.md).
class EventBacklog {
 public:
  void push_back(zmq::message_t body) { items_.push_back(std::move(body)); }
  void pop_front() {
    items_[head_++].rebuild();  // drops our reference; frames still queued keep theirs
    if (head_ * 2 >= items_.size()) {  // reclaim the dropped half
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  std::string_view front() const { return (*this)[0]; }
  std::string_view back() const { return (*this)[size() - 1]; }
  std::string_view operator[](std::size_t i) const {
    const zmq::message_t& m = items_[head_ + i];
    return {m.data<char>(), m.size()};
  }
  zmq::message_t& back_message() { return items_.back(); }  // to publish (copy() shares it)
  std::size_t size() const { return items_.size() - head_; }
  auto begin() const { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  auto end() const { return items_.end(); }

 private:
  std::vector<zmq::message_t> items_;
  std::size_t head_ = 0;
};

// What a task gains once it leaves the queue (dispatched, cancelled or finished): its attempt's
// worker, times, outcome, artifacts and event backlog. Allocated then (Task::mutable_run), so a
// queued task carries none of it.
struct TaskRun {
  std::string worker;       // routing id while running
  std::string worker_name;  // the worker's announced id, kept after it finishes
  std::string version;      // resolved version (from the worker's offer at dispatch)
  std::int64_t started_ms = 0, finished_ms = 0;
  std::chrono::steady_clock::time_point started_at;
  std::unique_ptr<protocol::TaskOutcome> outcome;  // set once finished
  std::vector<protocol::ArtifactMeta> artifacts;
  std::string retry_of;  // the dead-lettered task this one resubmits (set at creation; rare)

  // Event backlog: encoded Event bodies for seqs [first_seq, next_seq).
  std::int64_t next_seq = 1;
  std::int64_t first_seq = 1;
  EventBacklog backlog;
  std::size_t backlog_bytes = 0;
};

// Kept small: every queued task and every finished one within the retention is one of these
// (docs/performance.md, memory per queued task). The id is the 16-byte key, spelled on demand.
struct Task {
  TaskKey key;
  TaskState state;  // queued
  bool cancel_requested = false;
  // Recovered as running after a broker restart: waits for its worker to re-attach it (or to
  // send its result) until the re-attach grace period ends.
  bool orphaned = false;
  bool journal_dirty = false;  // listed in the broker's dirty_: its record is written at the turn's end
  std::int32_t attempt = 0;
  std::int32_t max_attempts = 1;  // attempts allowed when workers are lost
  SharedName tenant;  // who submitted it ("default" unless CURVE); only that tenant (and admins) may see it
  StoredRequest request;
  std::int64_t submitted_ms = 0;
  std::chrono::steady_clock::time_point queued_at;
  std::int64_t journal_row = 0;  // its row in the journal once inserted (Journal::update)

  TaskIdHex id() const { return TaskIdHex(key); }
  // The run record; an empty one (never allocated) while the task has none.
  const TaskRun& run() const;
  TaskRun& mutable_run();  // allocates it on first use

 private:
  std::unique_ptr<TaskRun> run_;
};

class TaskStore {
 public:
  explicit TaskStore(std::size_t backlog_limit_bytes) : backlog_limit_(backlog_limit_bytes) {}

  Task& create(protocol::SubmitRequest request, std::int64_t now_ms);
  // Re-creates a task read from the journal with its original id (recovery at start).
  Task& restore(const std::string& id, protocol::SubmitRequest request);
  // Forgets a task that was never acknowledged (its journal write failed).
  void erase(std::string_view id);
  void erase(const TaskKey& key);
  Task* find(std::string_view id);  // null for an unknown or malformed id
  Task* find(const TaskKey& key);
  Task* find_by_idempotency_key(const std::string& key);

  // Numbers, encodes and records an event; returns the encoded body, valid until the task's next
  // event: publish a copy of it (zmq::message_t::copy shares the buffer).
  zmq::message_t& append_event(Task& t, std::string_view type, std::string_view data_msgpack, std::int64_t ts_ms);

  // Records the finish time; tasks must be marked in finish order (recovery sorts them).
  void mark_finished(Task& t, std::int64_t now_ms);
  // Forgets tasks finished before now - retention, and the oldest beyond `max_finished` finished
  // tasks; returns how many.
  std::size_t expire(std::int64_t now_ms, std::int64_t retention_ms, std::size_t max_finished = SIZE_MAX);
  // Every finished task with a finish time up to this has been forgotten (what the journal may
  // delete); `now_ms` when no finished task is kept.
  std::int64_t forgotten_through_ms(std::int64_t now_ms) const;

  // The shared handle of a name (a tenant's) for a task's fields.
  SharedName name(std::string_view text) { return names_.get(text); }

  std::size_t size() const { return live_.size() + finished_.size(); }
  std::size_t count_in_state(std::string_view state) const;

 private:
  Task* find_in(const TaskIndex& index, const TaskKey& key);
  // Forgets the task in `slot`, found through `index` (its idempotency key too).
  void forget(TaskIndex& index, std::uint32_t slot);

  std::size_t backlog_limit_;
  protocol::Writer event_writer_;  // reused: an event's bytes are copied once, into its message
  NameTable names_;  // before the tasks: their handles are dropped first
  // Every task, at an address that stays put while it lives (callers hold Task& across calls,
  // and finishing a task only moves its index entry).
  Slab<Task> slab_;
  // Unfinished tasks, which every message of the hot path looks up, apart from the finished ones
  // kept for --retention-ms (up to a million): the live index stays small and in cache.
  TaskIndex live_;
  TaskIndex finished_;
  std::unordered_map<std::string, TaskKey> by_idempotency_key_;
  std::deque<std::pair<std::int64_t, TaskKey>> finished_order_;
};

}  // namespace kbfleet::broker
