#pragma once
// Turns a fuzz input into a byte stream plus the sizes of the pieces it arrives in, so the
// stream parsers see every split a pipe read could produce, and can reach their line cap
// (kMaxFd3LineBytes is 1 MiB, beyond -max_len) cheaply. Layout of the input:
//   byte 0      bits 0-3: how many chunk sizes follow (0 = the whole stream in one piece)
//               bits 4-7: stretch code; 12..15 stretch the stream's last line by repeating it
//               (the bytes after the last '\n') to exactly cap-1, cap, cap+1, cap+2 bytes;
//               codes 13 and 15 then add '\n' and the stream's earlier lines again
//   2 bytes per chunk size, little-endian, size = 1 + value; the sizes are used in a cycle
//   the rest    the stream
// Only the last line is stretched, so a stretched input costs one long line, not many.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kbfleet::fuzz {

struct ChunkedInput {
  std::string stream;
  std::vector<std::size_t> sizes;  // empty: one piece

  // Calls feed(piece) for consecutive pieces covering the whole stream.
  template <typename Feed>
  void for_each_piece(Feed&& feed) const {
    std::string_view rest = stream;
    for (std::size_t i = 0; !rest.empty(); ++i) {
      std::size_t n = sizes.empty() ? rest.size() : sizes[i % sizes.size()];
      if (n > rest.size()) n = rest.size();
      feed(rest.substr(0, n));
      rest.remove_prefix(n);
    }
  }
};

inline ChunkedInput chunked_input(const std::uint8_t* data, std::size_t size, std::size_t cap) {
  ChunkedInput out;
  if (size == 0) return out;
  std::size_t count = data[0] & 0x0f;
  unsigned stretch = data[0] >> 4;
  std::size_t at = 1;
  for (std::size_t i = 0; i < count && at + 2 <= size; ++i, at += 2) {
    out.sizes.push_back(1 + (data[at] | (std::size_t{data[at + 1]} << 8)));
  }
  std::string_view body(reinterpret_cast<const char*>(data) + at, size - at);
  auto nl = body.rfind('\n');
  std::string_view earlier = nl == std::string_view::npos ? std::string_view{} : body.substr(0, nl + 1);
  std::string_view last = body.substr(earlier.size());
  if (stretch < 12 || last.empty()) {
    out.stream.assign(body);
    return out;
  }
  std::size_t target = cap - 1 + (stretch - 12);
  out.stream.reserve(earlier.size() + target + 1 + earlier.size());
  out.stream.append(earlier);
  for (std::size_t n = 0; n < target; n += last.size()) out.stream.append(last.substr(0, target - n));
  if (stretch & 1) out.stream.append("\n").append(earlier);
  return out;
}

}  // namespace kbfleet::fuzz
