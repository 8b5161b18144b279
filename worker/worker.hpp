#pragma once
// The worker: one poll loop over its DEALER to the broker, the pipes and pidfds of the handlers
// it supervises, and a stop fd. It announces its plugins and slots, runs assigned tasks
// (task/prepare -> executor -> artifacts -> result), forwards output as coalesced events,
// re-announces itself when the broker restarts or goes silent, and re-sends each result until
// the broker acknowledges it.
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "common/manifest/registry.hpp"
#include "common/metrics/exposer.hpp"
#include "common/transport/curve.hpp"
#include "common/transport/frames.hpp"
#include "worker/task/prepare.hpp"
#include "worker/task/task_run.hpp"
#include "worker/worker_metrics.hpp"

namespace kbfleet::worker {

// --builtin-noop: also offer the in-process `kbfleet.noop` plugin (worker/task/builtin_noop.hpp).
enum class BuiltinNoop { kOff, kOn };

struct WorkerOptions {
  std::string broker = "tcp://127.0.0.1:7700";
  std::filesystem::path plugins_dir;
  std::filesystem::path work_dir;
  std::int64_t slots = 1;
  std::string metrics;  // HOST:PORT, empty = off
  std::string worker_id;  // default host-pid
  std::int64_t heartbeat_ms = 1000;
  std::int64_t liveness = 5;
  std::int64_t drain_ms = 30000;  // on SIGTERM: how long running tasks may finish
  WorkerPolicy policy;
  transport::ClientKeys curve;  // enabled: the DEALER is a CURVE client (--key, --broker-key)
  BuiltinNoop builtin_noop = BuiltinNoop::kOff;
};

class Worker {
 public:
  // Scans the plugins, prepares the work dir, connects and starts /metrics.
  [[nodiscard]] static Result<std::unique_ptr<Worker>> create(WorkerOptions options);
  ~Worker();
  const std::string& metrics_address() const { return metrics_endpoint_.address; }
  // Runs until stop_fd (SIGTERM/SIGINT) is readable, then drains: asks the broker for no more
  // tasks, lets running ones finish for up to drain_ms (a second signal cuts it short), kills the
  // rest and says `bye` so the broker retries them elsewhere at once.
  void run(int stop_fd);

 private:
  explicit Worker(WorkerOptions options);

  void send(std::string_view type, std::string body, std::vector<zmq::message_t> data = {});
  void announce();
  void on_broker_message(transport::Incoming& in);
  void on_task(const protocol::MapView& body);  // one `task`, or an element of `tasks`
  void on_result_ack(const protocol::MapView& ack);
  void on_cancel(transport::Incoming& in);
  void on_upload_reply(transport::Incoming& in);

  void start(std::unique_ptr<TaskRun> run);
  void reject(const protocol::TaskAssignment& task, const Error& e, std::vector<std::string> layers);
  void run_builtin(const protocol::TaskAssignment& task);
  void after_handler(TaskRun& run);
  void next_upload(TaskRun& run);
  void pump_upload(TaskRun& run);
  void finish_upload(TaskRun& run, const std::optional<Error>& error);
  void report(TaskRun& run);
  // Queues the result for this loop turn's `results` batch (flush_results); re-sent until
  // result_ack.
  void send_result(TaskRun& run);
  void flush_results();
  // Re-sends an unacknowledged result. Returns false when the run is to be given up: the broker
  // is alive but could read neither its result nor the minimal failure that replaced it.
  bool resend_result(TaskRun& run);
  void flush_events();               // every run's buffered events (once per loop turn)
  void flush_events(TaskRun& run);   // one run's
  void on_tick(Clock::time_point now);
  // Runs holding a slot: all but those reporting (result sent, waiting for the ack). Counted as
  // runs enter and leave the reporting phase, not by walking runs_ on every task and ack.
  std::int64_t busy_slots() const { return static_cast<std::int64_t>(runs_.size()) - reporting_; }
  int free_slot() const;
  // Removes a run, keeping the reporting count true.
  void erase_run(std::map<std::string, std::unique_ptr<TaskRun>>::iterator it);

  WorkerOptions options_;
  zmq::context_t ctx_;
  zmq::socket_t dealer_;
  manifest::Registry plugins_;
  WorkerMetrics metrics_;
  metrics::Endpoint metrics_endpoint_;
  std::map<std::string, std::unique_ptr<TaskRun>> runs_;  // by task id
  std::int64_t reporting_ = 0;  // runs_ in Phase::kReporting
  std::map<std::int64_t, std::string> req_to_task_;
  std::map<std::string, std::string> upload_to_task_;
  std::int64_t next_req_ = 1;
  Clock::time_point last_heard_;
  // When the broker last answered PROTOCOL_ERROR with req 0: it could not read a message of ours.
  Clock::time_point last_unreadable_;
  Clock::time_point last_sent_;
  std::vector<std::string> pending_results_;  // encoded result bodies of this loop turn
  std::size_t pending_result_bytes_ = 0;
};

}  // namespace kbfleet::worker
