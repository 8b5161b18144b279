#pragma once
// The worker's Prometheus metrics (docs/operations.md).
#include <memory>

#include "common/metrics/families.hpp"

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
  prometheus::Counter& results_unread;  // results a live broker could not read (bounded re-sends)
  metrics::LabeledCounter finished;  // by state, code
};

}  // namespace kbfleet::worker
