#include "common/metrics/exposer.hpp"

namespace kbfleet::metrics {

Result<Endpoint> serve(const std::string& address, std::shared_ptr<prometheus::Registry> registry) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument,
                      "metrics address '" + address + "' must be HOST:PORT, e.g. 127.0.0.1:9470");
  }
  try {
    Endpoint ep;
    ep.exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/1);
    ep.exposer->RegisterCollectable(registry);
    auto ports = ep.exposer->GetListeningPorts();
    ep.address = address.substr(0, colon) + ":" + (ports.empty() ? address.substr(colon + 1) : std::to_string(ports.front()));
    return ep;
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kIoError, "cannot serve metrics on " + address + ": " + e.what() +
                                               " (is the port in use?)");
  }
}

prometheus::Histogram::BucketBoundaries duration_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

}  // namespace kbfleet::metrics
