#pragma once
// Turns a fuzz input into a byte stream plus the sizes of the pieces it arrives in, so the
// stream parsers see every split a pipe read could produce, and can reach their line cap
// (kMaxFd3LineBytes is 1 MiB, beyond -max_len). Layout of the input:
//   byte 0      bits 0-3: how many chunk sizes follow (0 = the whole stream in one piece)
//               bits 4-7: 15 = stretch the stream's last line (the bytes after its last '\n')
//               by repetition to exactly cap-1, cap, cap+1 or cap+2 bytes (by the count's low
//               two bits); for cap and cap+2, '\n' and the earlier lines follow again
//   2 bytes per chunk size, little-endian, size = 1 + value; the sizes are used in a cycle and
//               multiplied by 256 for a stretched stream (a megabyte read a byte at a time
//               would only slow the fuzzer down)
//   the rest    the stream
// Stretching is rare (1 header in 16) and costs one long line, so throughput stays high.
#include <algorithm>
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
  bool stretch = (data[0] >> 4) == 15;
  std::size_t at = 1;
  for (std::size_t i = 0; i < count && at + 2 <= size; ++i, at += 2) {
    out.sizes.push_back(1 + (data[at] | (std::size_t{data[at + 1]} << 8)));
  }
  std::string_view body(reinterpret_cast<const char*>(data) + at, size - at);
  auto nl = body.rfind('\n');
  std::string_view earlier = nl == std::string_view::npos ? std::string_view{} : body.substr(0, nl + 1);
  std::string_view last = body.substr(earlier.size());
  if (!stretch || last.empty()) {
    out.stream.assign(body);
    return out;
  }
  for (auto& s : out.sizes) s *= 256;
  std::size_t variant = count & 3;
  std::size_t target = cap - 1 + variant;
  out.stream.reserve(2 * earlier.size() + target + 1);
  out.stream.append(earlier);
  std::size_t line_at = out.stream.size();
  out.stream.append(last);
  while (out.stream.size() - line_at < target) {  // doubling; no reallocation after the reserve
    std::size_t have = out.stream.size() - line_at;
    out.stream.append(out.stream, line_at, std::min(have, target - have));
  }
  if (variant & 1) out.stream.append("\n").append(earlier);
  return out;
}

}  // namespace kbfleet::fuzz
