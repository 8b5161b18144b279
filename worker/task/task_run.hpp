#pragma once
// One attempt of a task on this worker, from assignment to acknowledged result:
//   running (handler process) -> uploading (declared artifacts, one at a time) -> reporting
//   (result sent, re-sent until the broker acknowledges it).
// It is also the executor's Sink: output and progress become encoded events buffered until the
// worker loop flushes them as one task_events message per loop turn (coalescing).
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/hash/sha256.hpp"
#include "common/manifest/manifest.hpp"
#include "common/posix/fd.hpp"
#include "common/protocol/messages.hpp"
#include "worker/artifacts/collect.hpp"
#include "worker/artifacts/send_hasher.hpp"
#include "worker/executor/process.hpp"

namespace kbfleet::worker {

using Clock = std::chrono::steady_clock;

enum class Phase { kRunning, kUploading, kReporting };

struct ActiveUpload {
  CollectedArtifact artifact;
  std::int64_t req = 0;
  std::string upload_id;     // empty until the broker answers upload_ready
  std::int64_t sent = 0;     // bytes sent
  std::int64_t acked = 0;    // bytes acknowledged
  std::int64_t chunk_bytes = 256 << 10;
  std::int64_t window = 4;
  bool ending = false;       // upload_end sent
  // Set when the artifact was collected without its hash: every chunk is hashed on the hasher's
  // thread as it is read for sending, and the digest goes in upload_end.
  std::unique_ptr<SendHasher> hasher;
  Clock::time_point last_progress;
};

class TaskRun : public Sink {
 public:
  explicit TaskRun(protocol::TaskAssignment task) : task_(std::move(task)) {}

  const protocol::TaskAssignment& task() const { return task_; }
  Phase phase = Phase::kRunning;
  std::filesystem::path workspace;
  posix::Fd workspace_fd;
  const manifest::Manifest* manifest = nullptr;
  std::vector<std::string> layers;
  int slot = -1;  // which task user runs it; -1 before the spawn
  std::unique_ptr<HandlerProcess> process;
  protocol::TaskOutcome outcome;  // filled when the handler finished
  std::vector<CollectedArtifact> to_upload;  // in upload order (a vector: no allocation when empty, as for most tasks)
  std::optional<ActiveUpload> upload;
  Clock::time_point result_sent_at;
  // Sends of the result that a live broker left unacknowledged (it acknowledges every result
  // it can read, stale ones too): see Worker::resend_result().
  int unread_sends = 0;
  bool result_reduced = false;  // the outcome was replaced by a minimal failure
  std::int64_t output_bytes = 0;

  // The oldest buffered events, at most `max` of them, as a task_events body (empty string if
  // none); the rest stay buffered for the next call. The broker refuses a batch of more than
  // protocol::kMaxEventsPerBatch, so a flush takes batches until none is pending.
  std::string take_events(std::size_t max = protocol::kMaxEventsPerBatch);
  std::size_t pending_events() const { return events_.size(); }
  // Records an event produced by the worker itself (e.g. a fd-3 result).
  void add_event(std::string_view type, std::string data_msgpack);

  // Sink
  void on_output(const OutputLine& line) override;
  void on_progress(double progress, std::string_view message) override;
  void on_result(std::string result_msgpack) override;
  void on_fd3_invalid(std::string_view why) override;

 private:
  protocol::TaskAssignment task_;
  std::vector<std::string> events_;  // encoded {type, ts_ms, data}
};

// Maps how the process ended to the task's state and error (TIMEOUT, OUTPUT_LIMIT, ...).
protocol::TaskOutcome outcome_of(const ProcessOutcome& p, const Limits& limits);

}  // namespace kbfleet::worker
