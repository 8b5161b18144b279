#include "common/metrics/families.hpp"

#include "common/metrics/exposer.hpp"

namespace kbfleet::metrics {

prometheus::Counter& counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Gauge& gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram& duration_histogram(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, duration_buckets());
}

LabeledCounter::LabeledCounter(prometheus::Registry& r, const char* name, const char* help, std::string first_label,
                               std::string second_label)
    : family_(prometheus::BuildCounter().Name(name).Help(help).Register(r)),
      first_label_(std::move(first_label)),
      second_label_(std::move(second_label)) {}

void LabeledCounter::increment(const std::string& first, const std::string& second) {
  auto key = std::make_pair(first.empty() ? std::string("none") : first,
                            second.empty() ? std::string("none") : second);
  auto it = counters_.find(key);
  if (it == counters_.end()) {
    std::map<std::string, std::string> labels{{first_label_, key.first}};
    if (!second_label_.empty()) labels[second_label_] = key.second;
    it = counters_.emplace(key, &family_.Add(labels)).first;
  }
  it->second->Increment();
}

}  // namespace kbfleet::metrics
