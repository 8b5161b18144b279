#pragma once
// LineSplitter: turns one output stream (stdout or stderr) into OutputLines for a Sink.
// Lines are delivered without their '\n', numbered from 1. A line longer than kMaxLineBytes is
// delivered in kMaxLineBytes pieces sharing its number, partial = true on all but the last, so a
// handler printing a gigabyte without a newline costs at most kMaxLineBytes of buffer.
#include <cstdint>
#include <string>
#include <string_view>

#include "worker/executor/process.hpp"

namespace kbfleet::worker {

class LineSplitter {
 public:
  explicit LineSplitter(Stream stream) : stream_(stream) {}

  // Splits `bytes` (any chunk of the stream) and delivers every complete line or piece.
  void feed(std::string_view bytes, Sink& sink);
  // End of stream: delivers an unterminated last line, if any.
  void finish(Sink& sink);

 private:
  void emit(std::string_view text, bool partial, Sink& sink);

  Stream stream_;
  std::int64_t line_ = 1;
  std::string pending_;  // start of the current line; never longer than kMaxLineBytes
};

}  // namespace kbfleet::worker
