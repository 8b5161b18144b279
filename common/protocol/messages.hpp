#pragma once
// Typed kbfleet protocol messages shared by broker, worker and clients. The wire layout of every
// message is specified in docs/protocol.md; this header is its C++ mirror. Each struct has
// encode(Writer&) writing its fields into an open map, and a decode(MapView) returning
// PROTOCOL_ERROR naming the first bad field.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "common/protocol/wire.hpp"

namespace kbfleet::protocol {

inline constexpr std::string_view kProtocolTag = "KBF/1";  // frame 0 of every message
inline constexpr int kProtocolVersion = 1;
// A capability no operator grants by hand: workers require it in the offers of plugins with a
// `net: {allow}` list and grant it when they enforce allow-lists (--task-net), so the broker
// routes such tasks only to those workers. Capabilities starting "kbfleet." are reserved.
inline constexpr std::string_view kNetAllowCapability = "kbfleet.netallow";
inline constexpr std::string_view kReservedCapabilityPrefix = "kbfleet.";
// At most this many events in one `task_events` message; the broker refuses a larger batch whole.
inline constexpr std::size_t kMaxEventsPerBatch = 10000;
// At most this many items in one `tasks`, `results` or batched `result_ack` message: one loop
// turn's assignments, results or acknowledgements for one worker leave as one message.
inline constexpr std::size_t kMaxItemsPerBatch = 256;
// A worker closes a `results` batch once its bodies reach this size (a larger result goes alone).
inline constexpr std::size_t kMaxResultsBatchBytes = 1 << 20;

// Message type names (frame 1).
namespace msg {
// client -> broker
inline constexpr std::string_view kInfo = "info";
inline constexpr std::string_view kSubmit = "submit";
inline constexpr std::string_view kStatus = "status";
inline constexpr std::string_view kCancel = "cancel";
inline constexpr std::string_view kEvents = "events";
inline constexpr std::string_view kWorkers = "workers";
inline constexpr std::string_view kArtifacts = "artifacts";
inline constexpr std::string_view kFetch = "fetch";
inline constexpr std::string_view kRetry = "retry";  // resubmit a dead-lettered task
// broker -> client replies
inline constexpr std::string_view kSubmitted = "submitted";
inline constexpr std::string_view kChunk = "chunk";
inline constexpr std::string_view kError = "error";
// worker -> broker
inline constexpr std::string_view kReady = "ready";
inline constexpr std::string_view kHeartbeat = "heartbeat";
inline constexpr std::string_view kTaskEvents = "task_events";
inline constexpr std::string_view kResult = "result";
inline constexpr std::string_view kResults = "results";  // several results in one message
inline constexpr std::string_view kUploadBegin = "upload_begin";
inline constexpr std::string_view kUploadChunk = "upload_chunk";
inline constexpr std::string_view kUploadEnd = "upload_end";
inline constexpr std::string_view kDrain = "drain";  // stop sending me tasks (shutting down)
inline constexpr std::string_view kBye = "bye";      // I am leaving now; my running tasks are lost
// broker -> worker
inline constexpr std::string_view kTask = "task";
inline constexpr std::string_view kTasks = "tasks";  // several assignments in one message
inline constexpr std::string_view kReconnect = "reconnect";
inline constexpr std::string_view kResultAck = "result_ack";
inline constexpr std::string_view kUploadReady = "upload_ready";
inline constexpr std::string_view kUploadAck = "upload_ack";
inline constexpr std::string_view kUploadDone = "upload_done";
}  // namespace msg

// Task states as they appear on the wire.
namespace state {
inline constexpr std::string_view kQueued = "queued";
inline constexpr std::string_view kRunning = "running";
inline constexpr std::string_view kSucceeded = "succeeded";
inline constexpr std::string_view kFailed = "failed";
inline constexpr std::string_view kCancelled = "cancelled";
inline constexpr std::string_view kTimedOut = "timed_out";
// Waiting for a retry after its worker was lost (queued again when the backoff expires).
inline constexpr std::string_view kRetrying = "retrying";
// Lost with its worker on its last allowed attempt: terminal; `kbfleet retry` resubmits it.
inline constexpr std::string_view kDeadLetter = "dead_letter";
bool is_terminal(std::string_view s);
}  // namespace state

// Event types.
namespace event {
inline constexpr std::string_view kStarted = "started";
inline constexpr std::string_view kOutput = "output";
inline constexpr std::string_view kProgress = "progress";
inline constexpr std::string_view kArtifact = "artifact";
inline constexpr std::string_view kError = "error";
inline constexpr std::string_view kRetry = "retry";
inline constexpr std::string_view kCancelled = "cancelled";
inline constexpr std::string_view kDone = "done";
}  // namespace event

std::string task_topic(std::string_view task_id);      // "task.<id>"
std::string plugin_topic(std::string_view plugin_id);  // "plugin.<id>"

struct SubmitRequest {
  std::string plugin;
  std::string version;  // empty = any
  std::string handler;
  std::string input;    // msgpack bytes of the input value; empty = nil
  std::map<std::string, std::string> env;
  std::int64_t priority = 0;    // higher runs first
  std::int64_t timeout_ms = 0;  // 0 = the manifest's quota
  std::string idempotency_key;
  // Attempts allowed if workers are lost: 0 = the policy (3 for handlers the manifest marks
  // idempotent, else 1); N > 1 opts a non-idempotent handler into retries.
  std::int64_t max_attempts = 0;
  void encode(Writer& w) const;
  static Result<SubmitRequest> decode(const MapView& m);
};

// The same wire form from borrowed fields (the broker's journal encodes its stored requests).
struct SubmitRequestRef {
  std::string_view plugin, version, handler, input;
  const std::map<std::string, std::string>& env;
  std::int64_t priority = 0, timeout_ms = 0;
  std::string_view idempotency_key;
  std::int64_t max_attempts = 0;
  void encode(Writer& w) const;
};

// The broker's assignment of one attempt of a task to a worker.
struct TaskAssignment {
  std::string task_id;
  std::int64_t attempt = 1;
  std::string plugin;
  std::string version;
  std::string handler;
  std::string input;  // msgpack bytes
  std::map<std::string, std::string> env;
  std::int64_t timeout_ms = 0;
  void encode(Writer& w) const;
  static Result<TaskAssignment> decode(const MapView& m);
};

// The same wire form from borrowed fields: the broker encodes an assignment straight from its
// task record, without copying the request (input, env) into a TaskAssignment first.
struct TaskAssignmentRef {
  std::string_view task_id;
  std::int64_t attempt = 1;
  std::string_view plugin, version, handler, input;
  const std::map<std::string, std::string>& env;
  std::int64_t timeout_ms = 0;
  void encode(Writer& w) const;
};

struct ArtifactMeta {
  std::string name;  // the manifest's artifact id
  std::string path;  // relative to the workspace
  std::int64_t size = 0;
  std::string sha256;  // lowercase hex
  std::string content_type;
  void encode(Writer& w) const;
  static Result<ArtifactMeta> decode(const MapView& m);
};

// How one attempt ended, reported by the worker and kept by the broker.
struct TaskOutcome {
  std::string state;  // succeeded | failed | cancelled | timed_out
  std::int64_t exit_code = -1;  // -1 when the handler did not exit normally
  std::int64_t signal = 0;      // terminating signal, 0 if none
  std::string error_code;       // empty on success
  std::string error_message;
  std::string result;  // msgpack bytes of the handler's fd-3 {"result":...}; empty if none
  std::int64_t cpu_ms = 0;
  std::int64_t max_rss_kb = 0;
  std::int64_t wall_ms = 0;
  std::vector<std::string> layers;  // sandbox layers the attempt ran under
  std::vector<ArtifactMeta> artifacts;
  std::vector<std::string> artifact_errors;  // "name: CODE: message" for failed uploads
  void encode(Writer& w) const;
  static Result<TaskOutcome> decode(const MapView& m);
};

struct PluginOffer {
  std::string id;
  std::string version;
  std::vector<std::string> handlers;
  std::vector<std::string> capabilities;  // required by the plugin
  std::vector<std::string> idempotent;    // handlers safe to run again after a lost worker
  std::string error_code;  // set when the manifest is invalid: the plugin is advertised as broken
  std::string error_message;
  void encode(Writer& w) const;
  static Result<PluginOffer> decode(const MapView& m);
};

// A worker that announces it reads `acks` inside a `tasks` message: the broker may hold its result
// acknowledgements for up to kAckHoldMs and send them with its next assignment.
inline constexpr std::string_view kAcksInTasks = "acks_in_tasks";
inline constexpr std::int64_t kAckHoldMs = 5;

struct WorkerReady {
  std::string worker_id;
  std::string host;
  std::int64_t pid = 0;
  std::int64_t slots = 1;
  std::vector<std::string> capabilities;  // granted by the operator
  std::vector<std::string> layers;        // sandbox layers active on this host
  std::vector<PluginOffer> plugins;
  std::vector<std::string> running;  // task ids still running (after a reconnect)
  // Optional protocol features the worker understands (docs/protocol.md), e.g. kAcksInTasks.
  std::vector<std::string> features;
  void encode(Writer& w) const;
  static Result<WorkerReady> decode(const MapView& m);
};

// One event as produced by a worker (before the broker numbers it).
struct EventDraft {
  std::string type;
  std::int64_t ts_ms = 0;
  std::string data;  // msgpack bytes of a map (see docs/protocol.md, "Events")
};

// An event as published: numbered per task from 1 without gaps.
struct Event {
  std::string task_id;
  std::int64_t seq = 0;
  std::string type;
  std::int64_t ts_ms = 0;
  std::string plugin;
  std::int64_t attempt = 1;
  std::string data;  // msgpack bytes of a map
  void encode(Writer& w) const;
  static Result<Event> decode(const MapView& m);
};

// The same wire form from borrowed fields (the broker numbers and encodes each event once).
struct EventRef {
  std::string_view task_id;
  std::int64_t seq = 0;
  std::string_view type;
  std::int64_t ts_ms = 0;
  std::string_view plugin;
  std::int64_t attempt = 1;
  std::string_view data;
  void encode(Writer& w) const;
};

// Error reply body: {req, code, message, details}.
void encode_error(Writer& w, std::int64_t req, const Error& e);
Error decode_error(const MapView& m);

std::int64_t now_ms();  // wall clock, milliseconds since the epoch

}  // namespace kbfleet::protocol
