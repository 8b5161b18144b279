#pragma once
// Fd3Parser: the handler's structured channel on fd 3, one JSON object per line:
//   {"progress": <number in [0,1]>, "message": <optional string>}  -> Sink::on_progress
//   {"result": <any JSON>}                                          -> Sink::on_result (msgpack)
// Anything else (not JSON, wrong types, both or neither key, nesting deeper than kMaxFd3Depth,
// a line longer than kMaxFd3LineBytes) -> Sink::on_fd3_invalid with the reason; the handler
// keeps running. Empty lines are ignored. The input is untrusted: memory is bounded by the line
// cap and the depth cap keeps the recursive msgpack encoder off deep stacks.
#include <cstddef>
#include <string>
#include <string_view>

#include "worker/executor/process.hpp"

namespace kbfleet::worker {

inline constexpr std::size_t kMaxFd3LineBytes = 1u << 20;
// A result travels inside `result` (body > outcome > result) and later inside a status reply
// (body > task > outcome > result); the broker decodes bodies to depth 32, so deeper results
// could never be delivered (found by fuzzing: the worker re-sent a refused result forever).
inline constexpr std::size_t kMaxFd3Depth = 24;

class Fd3Parser {
 public:
  // Consumes any chunk of the fd-3 stream; delivers each complete line.
  void feed(std::string_view bytes, Sink& sink);
  // End of stream: an unterminated last line is parsed too.
  void finish(Sink& sink);

 private:
  void deliver(Sink& sink);

  std::string line_;
  bool discarding_ = false;  // the current line overflowed; skip to its newline
};

// Parses one fd-3 line (without '\n') and reports it to the sink.
void handle_fd3_line(std::string_view line, Sink& sink);

}  // namespace kbfleet::worker
