#pragma once
// The broker's Prometheus metrics (docs/operations.md lists them with their meaning).
#include <map>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

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

  void finished(const std::string& state, const std::string& code);
  void rejected(const std::string& code);  // a request answered with an error, by code
  void malformed(const std::string& reason);

 private:
  prometheus::Family<prometheus::Counter>& finished_family_;
  prometheus::Family<prometheus::Counter>& rejected_family_;
  prometheus::Family<prometheus::Counter>& malformed_family_;
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> finished_;
  std::map<std::string, prometheus::Counter*> rejected_;
  std::map<std::string, prometheus::Counter*> malformed_;
};

}  // namespace kbfleet::broker
