// Fuzzes the worker's fd-3 parser (worker/executor/fd3_parser.hpp), the structured channel a
// handler writes JSON lines to, with the stream arriving in arbitrary pieces
// (fuzz/chunked_input.hpp). Invariants checked (a failure traps):
//  - chunking does not matter: Fd3Parser reports exactly what handle_fd3_line reports for each
//    line of the whole stream (empty lines ignored, a line over kMaxFd3LineBytes one error);
//  - progress is in [0, 1]; a result is msgpack that converts back to JSON;
//  - a result the parser accepts survives the trip to the broker: the worker's result message
//    (worker/worker.cpp, send_result) decodes with the broker's default DecodeLimits.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"
#include "fuzz/chunked_input.hpp"
#include "worker/executor/fd3_parser.hpp"

namespace {

using namespace kbfleet::worker;
namespace protocol = kbfleet::protocol;

[[noreturn]] void invariant_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant broken: %s: %s\n", what, detail.c_str());
  __builtin_trap();
}

struct Report {
  enum Kind { kProgress, kResult, kInvalid } kind;
  double progress = 0;
  std::string text;  // message, result msgpack or reason
  bool operator==(const Report&) const = default;
};

class RecordingSink : public Sink {
 public:
  std::vector<Report> reports;
  void on_output(const OutputLine&) override { __builtin_trap(); }
  void on_progress(double progress, std::string_view message) override {
    reports.push_back({Report::kProgress, progress, std::string(message)});
  }
  void on_result(std::string result_msgpack) override {
    reports.push_back({Report::kResult, 0, std::move(result_msgpack)});
  }
  void on_fd3_invalid(std::string_view why) override { reports.push_back({Report::kInvalid, 0, std::string(why)}); }
};

// What the whole stream must produce, line by line, from the contract in fd3_parser.hpp.
std::vector<Report> expected_reports(std::string_view stream) {
  RecordingSink sink;
  while (!stream.empty()) {
    auto nl = stream.find('\n');
    std::string_view line = stream.substr(0, nl);
    stream.remove_prefix(nl == std::string_view::npos ? stream.size() : nl + 1);
    if (line.size() > kMaxFd3LineBytes) {
      sink.on_fd3_invalid("line is longer than " + std::to_string(kMaxFd3LineBytes) + " bytes");
    } else if (!line.empty()) {
      handle_fd3_line(line, sink);
    }
  }
  return sink.reports;
}

// The worker's result message for an attempt that produced `result` (worker.cpp, send_result).
void check_result_reaches_broker(const std::string& result) {
  protocol::TaskOutcome outcome;
  outcome.state = std::string(protocol::state::kSucceeded);
  outcome.exit_code = 0;
  outcome.result = result;
  protocol::Writer w;
  w.begin_map().kv("task_id", "t-1").kv("attempt", 1).key("outcome").begin_map();
  outcome.encode(w);
  w.end_map().end_map();
  auto body = protocol::Body::decode(w.take());
  if (!body) invariant_failed("result message refused by the broker's decoder", body.error().to_string());
  auto view = body->view().map_or_none("outcome");
  if (!view || !*view) invariant_failed("result message", "no outcome");
  auto decoded = protocol::TaskOutcome::decode(**view);
  if (!decoded || decoded->result != result) invariant_failed("result message", "outcome does not decode");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = kbfleet::fuzz::chunked_input(data, size, kMaxFd3LineBytes);
  Fd3Parser parser;
  RecordingSink sink;
  input.for_each_piece([&](std::string_view piece) { parser.feed(piece, sink); });
  parser.finish(sink);
  parser.finish(sink);  // a second finish reports nothing more

  if (sink.reports != expected_reports(input.stream)) invariant_failed("chunking changed the reports", "");
  for (const Report& r : sink.reports) {
    if (r.kind == Report::kProgress && !(r.progress >= 0.0 && r.progress <= 1.0)) {
      invariant_failed("progress outside [0, 1]", std::to_string(r.progress));
    }
    if (r.kind == Report::kResult) {
      if (!protocol::msgpack_to_json(r.text)) invariant_failed("result is not msgpack convertible to JSON", "");
      check_result_reaches_broker(r.text);
    }
  }
  return 0;
}
