#pragma once
// The worker's Prometheus metrics (docs/operations.md).
#include <map>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace kbfleet::worker {

class WorkerMetrics {
 public:
  WorkerMetrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;  // first: the members below live in it

 public:
  prometheus::Gauge& slots;
  prometheus::Gauge& busy;
  prometheus::Gauge& connected;
  prometheus::Counter& started;
  prometheus::Histogram& run_time;
  prometheus::Counter& output_bytes;
  prometheus::Counter& events_sent;
  prometheus::Counter& artifact_bytes;
  prometheus::Counter& reconnects;

  void finished(const std::string& state, const std::string& code);

 private:
  prometheus::Family<prometheus::Counter>& finished_family_;
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> finished_;
};

}  // namespace kbfleet::worker
