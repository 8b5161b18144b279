#pragma once
// Every task the broker accepted: its request, state, outcome, artifacts and a bounded backlog of
// its events (so a late or gapped subscriber can replay from seq 1). Finished tasks are kept for
// a retention time, then forgotten in finish order (O(1) amortised per task).
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

// 128 random bits as 32 lowercase hex characters (getrandom).
std::string new_task_id();
bool valid_task_id(std::string_view id);

struct Task {
  std::string id;
  std::string tenant = "default";  // who submitted it; only that tenant (and admins) may see it
  protocol::SubmitRequest request;
  std::string state{protocol::state::kQueued};
  std::int64_t attempt = 0;
  std::string worker;       // routing id while running
  std::string worker_name;  // the worker's announced id, kept after it finishes
  std::string version;      // resolved version (from the worker's offer at dispatch)
  std::int64_t submitted_ms = 0, started_ms = 0, finished_ms = 0;
  std::chrono::steady_clock::time_point queued_at, started_at;
  bool cancel_requested = false;
  // Recovered as running after a broker restart: waits for its worker to re-attach it (or to
  // send its result) until the re-attach grace period ends.
  bool orphaned = false;
  std::int64_t max_attempts = 1;  // attempts allowed when workers are lost
  std::string retry_of;           // the dead-lettered task this one resubmits
  std::optional<protocol::TaskOutcome> outcome;
  std::vector<protocol::ArtifactMeta> artifacts;

  // Event backlog: encoded Event bodies for seqs [first_seq, next_seq).
  std::int64_t next_seq = 1;
  std::int64_t first_seq = 1;
  std::deque<std::string> backlog;
  std::size_t backlog_bytes = 0;
};

class TaskStore {
 public:
  explicit TaskStore(std::size_t backlog_limit_bytes) : backlog_limit_(backlog_limit_bytes) {}

  Task& create(protocol::SubmitRequest request, std::int64_t now_ms);
  // Re-creates a task read from the journal with its original id (recovery at start).
  Task& restore(const std::string& id, protocol::SubmitRequest request);
  // Forgets a task that was never acknowledged (its journal write failed).
  void erase(const std::string& id);
  Task* find(std::string_view id);
  Task* find_by_idempotency_key(const std::string& key);

  // Numbers, encodes and records an event; returns the encoded body (to publish).
  std::string append_event(Task& t, std::string_view type, std::string data_msgpack, std::int64_t ts_ms);

  // Records the finish time; tasks must be marked in finish order (recovery sorts them).
  void mark_finished(Task& t, std::int64_t now_ms);
  // Forgets tasks finished before now - retention; returns how many.
  std::size_t expire(std::int64_t now_ms, std::int64_t retention_ms);

  std::size_t size() const { return tasks_.size(); }
  std::size_t count_in_state(std::string_view state) const;

 private:
  std::size_t backlog_limit_;
  std::unordered_map<std::string, Task> tasks_;
  std::unordered_map<std::string, std::string> by_idempotency_key_;
  std::deque<std::pair<std::int64_t, std::string>> finished_order_;
};

}  // namespace kbfleet::broker
