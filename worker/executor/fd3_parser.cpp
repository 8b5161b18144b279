#include "worker/executor/fd3_parser.hpp"

#include <optional>

#include <nlohmann/json.hpp>

#include "common/protocol/wire.hpp"

namespace kbfleet::worker {
namespace {

// True if arrays/objects in `text` nest deeper than `limit`. A lexical scan (brackets outside
// strings) that runs before parsing, because nlohmann::json::to_msgpack recurses per level and
// a 1 MiB line of '[' would otherwise overflow the worker's stack.
bool nests_deeper_than(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// The first array or object in `v` with more entries than the broker decodes in a message
// (protocol::DecodeLimits): such a result could never be delivered. Recursion is bounded by
// kMaxFd3Depth, checked before parsing.
std::optional<std::string> too_wide(const nlohmann::json& v) {
  const protocol::DecodeLimits limits;
  if (v.is_array() && v.size() > limits.array) {
    return "an array of " + std::to_string(v.size()) + " entries (at most " + std::to_string(limits.array) + ")";
  }
  if (v.is_object() && v.size() > limits.map) {
    return "an object of " + std::to_string(v.size()) + " keys (at most " + std::to_string(limits.map) + ")";
  }
  if (v.is_structured()) {
    for (const auto& child : v) {
      if (auto why = too_wide(child)) return why;
    }
  }
  return std::nullopt;
}

void handle_progress(const nlohmann::json& line, Sink& sink) {
  const auto& progress = *line.find("progress");
  if (!progress.is_number()) return sink.on_fd3_invalid("\"progress\" is not a number");
  double value = progress.get<double>();
  if (!(value >= 0.0 && value <= 1.0)) {
    return sink.on_fd3_invalid("\"progress\" is outside [0, 1]");
  }
  auto message = line.find("message");
  if (message == line.end() || message->is_null()) return sink.on_progress(value, "");
  if (!message->is_string()) return sink.on_fd3_invalid("\"message\" is not a string");
  sink.on_progress(value, message->get_ref<const std::string&>());
}

}  // namespace

void handle_fd3_line(std::string_view text, Sink& sink) {
  if (nests_deeper_than(text, kMaxFd3Depth)) {
    return sink.on_fd3_invalid("JSON nests deeper than " + std::to_string(kMaxFd3Depth) +
                               " levels");
  }
  auto line = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (line.is_discarded()) return sink.on_fd3_invalid("line is not valid JSON");
  if (!line.is_object()) return sink.on_fd3_invalid("line is not a JSON object");
  bool has_progress = line.contains("progress");
  bool has_result = line.contains("result");
  if (has_progress && has_result) {
    return sink.on_fd3_invalid("line has both \"progress\" and \"result\"; send them separately");
  }
  if (has_progress) return handle_progress(line, sink);
  if (has_result) {
    if (auto why = too_wide(*line.find("result"))) {
      return sink.on_fd3_invalid("\"result\" holds " + *why + "; the broker could not read it");
    }
    auto bytes = nlohmann::json::to_msgpack(*line.find("result"));
    return sink.on_result(std::string(bytes.begin(), bytes.end()));
  }
  sink.on_fd3_invalid("line has neither \"progress\" nor \"result\"");
}

void Fd3Parser::feed(std::string_view bytes, Sink& sink) {
  while (!bytes.empty()) {
    auto nl = bytes.find('\n');
    std::string_view part = bytes.substr(0, nl);
    bytes.remove_prefix(nl == std::string_view::npos ? bytes.size() : nl + 1);
    if (!discarding_) {
      if (line_.size() + part.size() > kMaxFd3LineBytes) {
        sink.on_fd3_invalid("line is longer than " + std::to_string(kMaxFd3LineBytes) +
                            " bytes");
        line_.clear();
        line_.shrink_to_fit();
        discarding_ = true;
      } else {
        line_.append(part);
      }
    }
    if (nl == std::string_view::npos) return;
    if (!discarding_) deliver(sink);
    discarding_ = false;
  }
}

void Fd3Parser::finish(Sink& sink) {
  if (!discarding_) deliver(sink);
  discarding_ = false;
}

void Fd3Parser::deliver(Sink& sink) {
  if (!line_.empty()) handle_fd3_line(line_, sink);
  line_.clear();
}

}  // namespace kbfleet::worker
