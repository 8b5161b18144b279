// Fuzzes the worker's stdout/stderr line splitter (worker/executor/line_splitter.hpp) with the
// stream arriving in arbitrary pieces (fuzz/chunked_input.hpp). Invariant checked (a failure
// traps): the pieces delivered are exactly those computed from the whole stream at once:
//  - every '\n'-terminated line, and a non-empty unterminated last line, becomes
//    max(1, ceil(len / kMaxLineBytes)) pieces, in order, without the '\n';
//  - all pieces but the last of a line are exactly kMaxLineBytes long and partial; the last
//    is not partial; the pieces of a line share its number, lines are numbered from 1;
//  - so no piece is longer than kMaxLineBytes and the pieces plus newlines give back the input.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/chunked_input.hpp"
#include "worker/executor/line_splitter.hpp"

namespace {

using namespace kbfleet::worker;

[[noreturn]] void invariant_failed(const char* what, std::size_t index) {
  std::fprintf(stderr, "invariant broken: %s (piece %zu)\n", what, index);
  __builtin_trap();
}

class RecordingSink : public Sink {
 public:
  std::vector<OutputLine> lines;
  void on_output(const OutputLine& line) override { lines.push_back(line); }
  void on_progress(double, std::string_view) override { __builtin_trap(); }
  void on_result(std::string) override { __builtin_trap(); }
  void on_fd3_invalid(std::string_view) override { __builtin_trap(); }
};

// The pieces the whole stream must produce, from the contract in line_splitter.hpp.
std::vector<OutputLine> expected_pieces(std::string_view stream, Stream which) {
  std::vector<OutputLine> out;
  std::int64_t number = 1;
  while (!stream.empty()) {
    auto nl = stream.find('\n');
    std::string_view line = stream.substr(0, nl);
    stream.remove_prefix(nl == std::string_view::npos ? stream.size() : nl + 1);
    do {
      std::size_t n = line.size() < kMaxLineBytes ? line.size() : kMaxLineBytes;
      bool partial = line.size() > kMaxLineBytes;
      out.push_back(OutputLine{which, number, std::string(line.substr(0, n)), partial});
      line.remove_prefix(n);
    } while (!line.empty());
    ++number;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = kbfleet::fuzz::chunked_input(data, size, kMaxLineBytes);
  Stream which = size > 0 && (data[0] & 1) ? Stream::kStderr : Stream::kStdout;
  LineSplitter splitter(which);
  RecordingSink sink;
  input.for_each_piece([&](std::string_view piece) { splitter.feed(piece, sink); });
  splitter.finish(sink);
  splitter.finish(sink);  // a second finish delivers nothing more

  auto expected = expected_pieces(input.stream, which);
  std::string rebuilt;
  for (std::size_t i = 0; i < sink.lines.size(); ++i) {
    const OutputLine& got = sink.lines[i];
    if (got.text.size() > kMaxLineBytes) invariant_failed("piece longer than kMaxLineBytes", i);
    if (got.text.find('\n') != std::string::npos) invariant_failed("piece contains a newline", i);
    if (i >= expected.size()) invariant_failed("more pieces than lines need", i);
    const OutputLine& want = expected[i];
    if (got.stream != want.stream) invariant_failed("wrong stream", i);
    if (got.line != want.line) invariant_failed("wrong line number", i);
    if (got.partial != want.partial) invariant_failed("wrong partial flag", i);
    if (got.text != want.text) invariant_failed("wrong text", i);
    rebuilt += got.text;
    if (!got.partial) rebuilt += '\n';
  }
  if (sink.lines.size() != expected.size()) invariant_failed("fewer pieces than lines need", sink.lines.size());
  if (!input.stream.empty() && input.stream.back() != '\n') rebuilt.pop_back();
  if (rebuilt != input.stream) invariant_failed("pieces and newlines do not give back the input", 0);
  return 0;
}
