#pragma once
// Registering metrics in one line each, and counters labelled by a task's final state and error
// code (created on first use; the label values come from fixed sets, so cardinality is bounded).
#include <map>
#include <string>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace kbfleet::metrics {

prometheus::Counter& counter(prometheus::Registry& r, const char* name, const char* help);
prometheus::Gauge& gauge(prometheus::Registry& r, const char* name, const char* help);
// A histogram of durations in seconds (duration_buckets()).
prometheus::Histogram& duration_histogram(prometheus::Registry& r, const char* name, const char* help);

class LabeledCounter {
 public:
  // label_names: one or two label names, e.g. {"state", "code"}.
  LabeledCounter(prometheus::Registry& r, const char* name, const char* help, std::string first_label,
                 std::string second_label = "");
  // Empty values are exported as "none".
  void increment(const std::string& first, const std::string& second = "");

 private:
  prometheus::Family<prometheus::Counter>& family_;
  std::string first_label_, second_label_;
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> counters_;
};

}  // namespace kbfleet::metrics
