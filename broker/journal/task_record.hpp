#pragma once
// What the journal holds of one task (journal.hpp writes and reads it, fields.hpp encodes it).
#include <cstdint>
#include <string>
#include <string_view>

namespace kbfleet::broker {

// One task as journalled. Blobs are msgpack: `request` a SubmitRequest map, `outcome` a
// TaskOutcome map (empty while unfinished), `artifacts` an array of ArtifactMeta maps.
struct TaskRecord {
  std::string id;
  std::string request;
  std::string idempotency_key;
  std::string state;
  std::int64_t attempt = 0;
  std::string worker;       // routing id of the worker running the attempt ("" when not running)
  std::string worker_name;
  std::string version;
  std::int64_t submitted_ms = 0, started_ms = 0, finished_ms = 0;  // finished_ms 0 = unfinished
  std::int64_t next_seq = 1;  // the task's next event sequence number
  std::int64_t max_attempts = 1;
  std::string retry_of;
  bool cancel_requested = false;
  std::string outcome;
  std::string artifacts;
  std::string tenant = "default";  // the tenant that submitted it (issue #7)
  std::int64_t row = 0;  // its journal row: returned by insert(), filled by load(), used by update()
};

// The same fields, viewing bytes the caller keeps alive for the call: what the journal writes.
// The broker fills one from a task without copying its strings (fill_record in recovery.cpp).
struct TaskRecordRef {
  std::string_view id, request, idempotency_key, state, worker, worker_name, version, retry_of, outcome,
      artifacts, tenant;
  std::int64_t attempt = 0, submitted_ms = 0, started_ms = 0, finished_ms = 0, next_seq = 1, max_attempts = 1;
  std::int64_t row = 0;
  bool cancel_requested = false;
};

inline TaskRecordRef ref_of(const TaskRecord& r) {
  TaskRecordRef v;
  v.id = r.id;
  v.request = r.request;
  v.idempotency_key = r.idempotency_key;
  v.state = r.state;
  v.worker = r.worker;
  v.worker_name = r.worker_name;
  v.version = r.version;
  v.retry_of = r.retry_of;
  v.outcome = r.outcome;
  v.artifacts = r.artifacts;
  v.tenant = r.tenant;
  v.attempt = r.attempt;
  v.submitted_ms = r.submitted_ms;
  v.started_ms = r.started_ms;
  v.finished_ms = r.finished_ms;
  v.next_seq = r.next_seq;
  v.max_attempts = r.max_attempts;
  v.row = r.row;
  v.cancel_requested = r.cancel_requested;
  return v;
}

}  // namespace kbfleet::broker
