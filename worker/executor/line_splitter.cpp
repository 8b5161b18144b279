#include "worker/executor/line_splitter.hpp"

namespace kbfleet::worker {

void LineSplitter::feed(std::string_view bytes, Sink& sink) {
  while (!bytes.empty()) {
    auto nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      // No end of line yet: keep at most kMaxLineBytes, emitting a piece only once we know more
      // follows, so a line of exactly kMaxLineBytes is one piece rather than a piece plus "".
      while (pending_.size() + bytes.size() > kMaxLineBytes) {
        std::size_t take = kMaxLineBytes - pending_.size();
        pending_.append(bytes.substr(0, take));
        bytes.remove_prefix(take);
        emit(pending_, /*partial=*/true, sink);
        pending_.clear();
      }
      pending_.append(bytes);
      return;
    }
    std::string_view rest = bytes.substr(0, nl);
    bytes.remove_prefix(nl + 1);
    while (pending_.size() + rest.size() > kMaxLineBytes) {
      std::size_t take = kMaxLineBytes - pending_.size();
      pending_.append(rest.substr(0, take));
      rest.remove_prefix(take);
      emit(pending_, /*partial=*/true, sink);
      pending_.clear();
    }
    if (pending_.empty()) {
      emit(rest, /*partial=*/false, sink);  // the common case: no copy
    } else {
      pending_.append(rest);
      emit(pending_, /*partial=*/false, sink);
      pending_.clear();
    }
    ++line_;
  }
}

void LineSplitter::finish(Sink& sink) {
  if (pending_.empty()) return;
  emit(pending_, /*partial=*/false, sink);
  pending_.clear();
  ++line_;
}

void LineSplitter::emit(std::string_view text, bool partial, Sink& sink) {
  sink.on_output(OutputLine{stream_, line_, std::string(text), partial});
}

}  // namespace kbfleet::worker
