#include "worker/task/task_run.hpp"

#include <signal.h>
#include <string.h>

#include <algorithm>

#include <spdlog/spdlog.h>

namespace kbfleet::worker {

using protocol::Writer;
namespace state = protocol::state;

void TaskRun::add_event(std::string_view type, std::string data_msgpack) {
  Writer w;
  w.begin_map().kv("type", type).kv("ts_ms", protocol::now_ms()).key("data").raw(data_msgpack).end_map();
  events_.push_back(w.take());
}

std::string TaskRun::take_events(std::size_t max) {
  if (events_.empty()) return {};
  Writer w;
  w.begin_map().kv("task_id", task_.task_id).kv("attempt", task_.attempt).key("events").begin_array();
  const auto n = std::min(max, events_.size());
  for (std::size_t i = 0; i < n; ++i) w.raw(events_[i]);
  w.end_array().end_map();
  events_.erase(events_.begin(), events_.begin() + static_cast<std::ptrdiff_t>(n));
  return w.take();
}

void TaskRun::on_output(const OutputLine& line) {
  output_bytes += static_cast<std::int64_t>(line.text.size());
  Writer d;
  d.begin_map().kv("stream", line.stream == Stream::kStdout ? "stdout" : "stderr").kv("line", line.line);
  d.kv("text", line.text);
  if (line.partial) d.kv("partial", true);
  d.end_map();
  add_event(protocol::event::kOutput, d.take());
}

void TaskRun::on_progress(double progress, std::string_view message) {
  Writer d;
  d.begin_map().kv("progress", progress).kv("message", message).end_map();
  add_event(protocol::event::kProgress, d.take());
}

void TaskRun::on_result(std::string result_msgpack) { outcome.result = std::move(result_msgpack); }

void TaskRun::on_fd3_invalid(std::string_view why) {
  spdlog::debug("invalid fd-3 line task={} reason=\"{}\"", task_.task_id, why);
}

protocol::TaskOutcome outcome_of(const ProcessOutcome& p, const Limits& limits) {
  protocol::TaskOutcome o;
  o.exit_code = p.exit_code;
  o.signal = p.signal;
  o.cpu_ms = p.cpu_ms;
  o.max_rss_kb = p.max_rss_kb;
  o.wall_ms = p.wall_ms;
  auto fail = [&](std::string_view st, ErrorCode code, std::string message) {
    o.state = std::string(st);
    o.error_code = std::string(code_name(code));
    o.error_message = std::move(message);
  };
  switch (p.reason) {
    case EndReason::kExited:
      if (p.exit_code == 0) {
        o.state = std::string(state::kSucceeded);
      } else {
        fail(state::kFailed, ErrorCode::kHandlerFailed, "the handler exited with status " + std::to_string(p.exit_code));
      }
      break;
    case EndReason::kSignaled:
      fail(state::kFailed, ErrorCode::kHandlerFailed,
           "the handler was killed by signal " + std::to_string(p.signal) + " (" + ::strsignal(p.signal) + ")");
      break;
    case EndReason::kTimeout:
      fail(state::kTimedOut, ErrorCode::kTimeout,
           "the handler ran longer than its timeout of " + std::to_string(limits.timeout_ms) +
               " ms and was killed; raise quotas.timeoutMs or pass --timeout");
      break;
    case EndReason::kOutputLimit:
      fail(state::kFailed, ErrorCode::kOutputLimit,
           "the handler wrote more than quotas.outputBytes (" + std::to_string(limits.output_bytes) +
               " bytes) and was killed; write bulk data to an artifact instead");
      break;
    case EndReason::kCpuLimit:
      fail(state::kFailed, ErrorCode::kCpuLimit,
           "the handler used more than quotas.cpuMs (" + std::to_string(limits.cpu_ms) + " ms of CPU) and was killed");
      break;
    case EndReason::kCancelled:
      fail(state::kCancelled, ErrorCode::kCancelled, "cancelled by request");
      break;
    case EndReason::kMemoryLimit:
      fail(state::kFailed, ErrorCode::kMemoryLimit,
           "the handler used more than quotas.memoryMb" +
               (limits.memory_mb > 0 ? " (" + std::to_string(limits.memory_mb) + " MiB)" : std::string()) +
               " and was killed by the kernel's OOM killer; raise quotas.memoryMb or use less memory");
      break;
    case EndReason::kDiskLimit:
      fail(state::kFailed, ErrorCode::kDiskLimit,
           "the handler filled its workspace (quotas.diskMb = " + std::to_string(limits.disk_mb) +
               " MiB) and failed; raise quotas.diskMb (and memoryMb: workspace bytes count towards it) or "
               "write less");
      break;
    case EndReason::kPidsLimit:
      fail(state::kFailed, ErrorCode::kPidsLimit,
           "the handler tried to run more than quotas.pids" +
               (limits.pids > 0 ? " (" + std::to_string(limits.pids) + ")" : std::string()) +
               " processes and threads at once; a fork failed and the handler failed; raise quotas.pids");
      break;
  }
  return o;
}

}  // namespace kbfleet::worker
