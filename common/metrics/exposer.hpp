#pragma once
// Serves a prometheus-cpp registry on http://ADDRESS/metrics (civetweb threads inside
// prometheus-cpp; the registry's counters are atomic, so the poll loops update them lock-free).
#include <memory>
#include <string>

#include <prometheus/exposer.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/errors/error.hpp"

namespace kbfleet::metrics {

struct Endpoint {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string address;  // host:port actually bound (port 0 resolved)
};

// address: "127.0.0.1:9470" or "127.0.0.1:0". IO_ERROR if it cannot be bound.
Result<Endpoint> serve(const std::string& address, std::shared_ptr<prometheus::Registry> registry);

// Histogram buckets in seconds from 1 ms to ~10 min, for queue wait and run durations.
prometheus::Histogram::BucketBoundaries duration_buckets();

}  // namespace kbfleet::metrics
