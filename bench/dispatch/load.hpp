#pragma once
// The load generator of the dispatch benchmark, one for each system, sharing what is measured:
// one client keeps `window` requests in flight, and each completion frees a place for the next.
//   kbfleet: a DEALER sends `submit` to the broker's ROUTER; completion is the task's `done`
//            event on a SUB subscribed to `task.` (what `kbfleet run` waits for). Latency is
//            submit sent -> `done` received.
//   baseline: a DEALER sends the request to the frontend; completion is the echoed reply.
// Throughput counts completions inside the measured interval, which starts `warmup_s` after the
// window first filled; latencies are those of tasks submitted and completed inside it.
#include <cstdint>
#include <functional>
#include <string>

namespace kbfleet::bench {

struct LoadSpec {
  int window = 1;
  double warmup_s = 0.5;
  double seconds = 3.0;
  std::string plugin = "kbfleet.noop";
  std::string handler = "noop";
  std::string input;          // msgpack bytes of the task input (also sizes the baseline request)
  std::int64_t priority = 0;
  std::function<void()> on_measure_start;  // e.g. read the broker's CPU time
  std::function<void()> on_measure_end;
};

struct LoadResult {
  std::int64_t completed = 0;  // inside the measured interval
  double seconds = 0;
  double tasks_per_s = 0;
  double p50_us = 0, p99_us = 0;
  double p90_us = 0, p999_us = 0;  // the shape of the tail: a plateau (scheduling) or spikes
  std::int64_t lost = 0;     // no completion within 10 s (e.g. an event dropped at a high-water mark)
  std::int64_t refused = 0;  // kbfleet `error` replies to submit
  std::string first_error;
  double client_cpu_s = 0;   // this process, over the measured interval
  std::int64_t request_bytes = 0;
};

// The submit body kbfleet's client sends (also the baseline's request, so both carry the same bytes).
std::string submit_body(const LoadSpec& spec, std::int64_t req);

// Both first make sure completions are seen: kbfleet's submits probe tasks until one's `done`
// arrives on `events` (the subscription has reached the broker), for up to 10 s, else returns a
// result with `first_error` set.
LoadResult run_kbfleet_load(const std::string& router, const std::string& events, const LoadSpec& spec);
LoadResult run_baseline_load(const std::string& frontend, const LoadSpec& spec);

}  // namespace kbfleet::bench
