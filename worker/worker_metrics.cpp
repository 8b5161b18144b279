#include "worker/worker_metrics.hpp"

#include "common/metrics/exposer.hpp"

namespace kbfleet::worker {
namespace {

prometheus::Counter& counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}
prometheus::Gauge& gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      slots(gauge(*registry_, "kbfleet_worker_slots", "Task slots of this worker.")),
      busy(gauge(*registry_, "kbfleet_worker_slots_busy", "Slots running a task (including uploading and reporting).")),
      connected(gauge(*registry_, "kbfleet_worker_broker_connected", "1 while the broker answers heartbeats.")),
      started(counter(*registry_, "kbfleet_worker_tasks_started_total", "Tasks received from the broker.")),
      run_time(prometheus::BuildHistogram()
                   .Name("kbfleet_worker_task_run_seconds")
                   .Help("Handler wall time, spawn to exit.")
                   .Register(*registry_)
                   .Add({}, metrics::duration_buckets())),
      output_bytes(counter(*registry_, "kbfleet_worker_output_bytes_total", "Handler stdout/stderr bytes forwarded.")),
      events_sent(counter(*registry_, "kbfleet_worker_events_sent_total", "Output and progress events sent to the broker.")),
      artifact_bytes(counter(*registry_, "kbfleet_worker_artifact_uploaded_bytes_total", "Artifact bytes uploaded.")),
      reconnects(counter(*registry_, "kbfleet_worker_reconnects_total", "Times the worker re-announced itself to the broker.")),
      finished_family_(prometheus::BuildCounter()
                           .Name("kbfleet_worker_tasks_finished_total")
                           .Help("Tasks finished on this worker, by state and error code.")
                           .Register(*registry_)) {}

void WorkerMetrics::finished(const std::string& state, const std::string& code) {
  auto key = std::make_pair(state, code.empty() ? std::string("none") : code);
  auto it = finished_.find(key);
  if (it == finished_.end()) {
    it = finished_.emplace(key, &finished_family_.Add({{"state", key.first}, {"code", key.second}})).first;
  }
  it->second->Increment();
}

}  // namespace kbfleet::worker
