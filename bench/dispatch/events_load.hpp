#pragma once
// The events scenario of the benchmark: one task whose handler writes many short lines, followed
// by `subscribers` SUB sockets at once. Each subscriber takes what the broker publishes live and,
// after the task's `done`, fetches whatever it missed (the PUB high-water mark drops by design)
// with `events` requests, until it holds every sequence number from 1 to `done` (0 gaps).
// Measured: submit -> the last subscriber complete.
#include <cstdint>
#include <string>

namespace kbfleet::bench {

struct EventsSpec {
  std::string plugin, handler;
  int subscribers = 10;
  std::int64_t lines = 200000;  // expected `output` events
};

struct EventsResult {
  double seconds = 0;            // submit -> every subscriber complete
  double lines_per_s = 0;        // lines / seconds (each line delivered to every subscriber)
  std::int64_t live = 0;         // events received live, summed over subscribers
  std::int64_t replayed = 0;     // events fetched with `events` to fill gaps, summed
  std::int64_t output_events = 0;  // per subscriber (the minimum over them)
  bool complete = false;         // every subscriber saw seq 1..done without a hole
  std::string error;
};

EventsResult run_events_load(const std::string& router, const std::string& events, const EventsSpec& spec);

}  // namespace kbfleet::bench
