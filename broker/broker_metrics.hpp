#pragma once
// The broker's Prometheus metrics (docs/operations.md lists them with their meaning).
#include <memory>
#include <string>

#include "common/metrics/families.hpp"

namespace kbfleet::broker {

class BrokerMetrics {
 public:
  BrokerMetrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;  // first: the members below live in it

 public:
  prometheus::Counter& submitted;
  prometheus::Gauge& queue_depth;
  prometheus::Gauge& running;
  prometheus::Gauge& workers;
  prometheus::Gauge& slots_total;
  prometheus::Gauge& slots_free;
  prometheus::Histogram& queue_wait;
  prometheus::Histogram& run_time;
  prometheus::Counter& events_published;
  prometheus::Counter& artifact_bytes_in;
  prometheus::Counter& artifact_bytes_out;
  prometheus::Counter& workers_lost;
  prometheus::Counter& retries;
  prometheus::Gauge& draining;
  prometheus::Counter& journal_commits;
  prometheus::Counter& journal_records;
  prometheus::Histogram& journal_commit_time;
  prometheus::Counter& journal_errors;
  prometheus::Counter& journal_compacted;
  metrics::LabeledCounter recovered;  // tasks read from the journal at start, by recovered state
  metrics::LabeledCounter finished;   // by state, code
  metrics::LabeledCounter rejected;   // requests answered with an error, by code
  metrics::LabeledCounter malformed;  // messages dropped or refused, by reason
  metrics::LabeledCounter auth_denied;  // CURVE mode: connections, requests, subscriptions refused, by reason
  prometheus::Counter& auth_reloads;
};

}  // namespace kbfleet::broker
