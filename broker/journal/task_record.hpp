#pragma once
// What the journal holds of one task (journal.hpp writes and reads it, fields.hpp encodes it).
#include <cstdint>
#include <string>

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

}  // namespace kbfleet::broker
