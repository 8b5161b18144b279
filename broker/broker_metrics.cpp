#include "broker/broker_metrics.hpp"

#include "common/metrics/exposer.hpp"

namespace kbfleet::broker {
namespace {

prometheus::Counter& counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}
prometheus::Gauge& gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}
prometheus::Histogram& histogram(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, metrics::duration_buckets());
}

}  // namespace

BrokerMetrics::BrokerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      submitted(counter(*registry_, "kbfleet_broker_tasks_submitted_total", "Tasks accepted by the broker.")),
      queue_depth(gauge(*registry_, "kbfleet_broker_queue_depth", "Tasks waiting for a worker.")),
      running(gauge(*registry_, "kbfleet_broker_tasks_running", "Tasks dispatched and not finished.")),
      workers(gauge(*registry_, "kbfleet_broker_workers", "Connected workers.")),
      slots_total(gauge(*registry_, "kbfleet_broker_worker_slots", "Task slots announced by connected workers.")),
      slots_free(gauge(*registry_, "kbfleet_broker_worker_slots_free", "Task slots without a task.")),
      queue_wait(histogram(*registry_, "kbfleet_broker_task_queue_wait_seconds",
                           "Time from submission to dispatch.")),
      run_time(histogram(*registry_, "kbfleet_broker_task_run_seconds", "Time from dispatch to result.")),
      events_published(counter(*registry_, "kbfleet_broker_events_published_total",
                               "Task events published on the event endpoint.")),
      artifact_bytes_in(counter(*registry_, "kbfleet_broker_artifact_received_bytes_total",
                                "Artifact bytes uploaded by workers and stored.")),
      artifact_bytes_out(counter(*registry_, "kbfleet_broker_artifact_served_bytes_total",
                                 "Artifact bytes served to clients.")),
      workers_lost(counter(*registry_, "kbfleet_broker_workers_lost_total",
                           "Workers declared dead after missing heartbeats.")),
      finished_family_(prometheus::BuildCounter()
                           .Name("kbfleet_broker_tasks_finished_total")
                           .Help("Tasks that reached a terminal state, by state and error code.")
                           .Register(*registry_)),
      rejected_family_(prometheus::BuildCounter()
                           .Name("kbfleet_broker_requests_rejected_total")
                           .Help("Requests answered with an error, by error code.")
                           .Register(*registry_)),
      malformed_family_(prometheus::BuildCounter()
                            .Name("kbfleet_broker_messages_malformed_total")
                            .Help("Messages dropped or refused because they were malformed, by reason.")
                            .Register(*registry_)) {}

void BrokerMetrics::finished(const std::string& state, const std::string& code) {
  auto key = std::make_pair(state, code.empty() ? std::string("none") : code);
  auto it = finished_.find(key);
  if (it == finished_.end()) {
    it = finished_.emplace(key, &finished_family_.Add({{"state", key.first}, {"code", key.second}})).first;
  }
  it->second->Increment();
}

void BrokerMetrics::rejected(const std::string& code) {
  auto it = rejected_.find(code);
  if (it == rejected_.end()) it = rejected_.emplace(code, &rejected_family_.Add({{"code", code}})).first;
  it->second->Increment();
}

void BrokerMetrics::malformed(const std::string& reason) {
  auto it = malformed_.find(reason);
  if (it == malformed_.end()) it = malformed_.emplace(reason, &malformed_family_.Add({{"reason", reason}})).first;
  it->second->Increment();
}

}  // namespace kbfleet::broker
