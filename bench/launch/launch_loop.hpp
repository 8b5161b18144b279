#pragma once
// One local launcher loop of kbfleet-launch-bench: what a worker with one slot does per task,
// without the broker. It probes the sandbox layers as kbfleet-worker does at start, then runs
// one attempt after another through the worker's own per-task steps (worker/task/attempt.hpp:
// workspace, cgroup, tmpfs, isolation incl. the netns `net: none` asks for, spawn, supervision,
// outcome, artifacts, workspace retirement) and times each from start to retired.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace kbfleet::bench {

struct LoopSpec {
  std::filesystem::path plugins;   // a plugins directory as kbfleet-worker --plugins takes it
  std::string plugin, handler;
  std::filesystem::path work_dir;  // this loop's --work (created; outside /tmp)
  std::filesystem::path init;      // kbfleet-init
  int index = 0;                   // names the task ids apart from other loops'
  double warmup_s = 0.5, seconds = 3;
};

struct LoopResult {
  std::int64_t completed = 0;  // attempts that succeeded and were retired inside the interval
  std::int64_t failed = 0;     // attempts refused or not succeeded (any time)
  std::vector<double> latency_us;  // of the attempts started and retired inside the interval
  std::string first_error;
  bool layers_missing = false;  // the host lacks a sandbox layer (first_error says which)
};

// Probes, then calls `ready` (which blocks until every loop is ready to start) and runs the loop:
// `warmup_s` untimed, `seconds` measured; the attempt running when the interval ends is finished,
// not counted. A host without every sandbox layer runs nothing: first_error names what is missing.
LoopResult run_launch_loop(const LoopSpec& spec, const std::function<void()>& ready);

}  // namespace kbfleet::bench
