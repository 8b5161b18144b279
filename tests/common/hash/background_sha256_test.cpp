// SHA-256 on its own thread gives the same digest as hashing in turn, whatever the split.
#include "common/hash/background_sha256.hpp"

#include <catch2/catch.hpp>

#include <string>

using kbfleet::hash::BackgroundSha256;

namespace {

std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

}  // namespace

TEST_CASE("a stream hashed on the background thread in pieces has the digest of the whole", "[common][hash]") {
  const std::string data = pattern((3 << 20) + 5);
  auto h = BackgroundSha256::start();
  REQUIRE(h);
  const std::size_t piece = GENERATE(std::size_t{1}, std::size_t{4095}, std::size_t{1} << 20);
  std::uint64_t n = 0;
  for (std::size_t off = 0; off < data.size() && off < (std::size_t{64} << 10) * piece; off += piece) {
    n = (*h)->update(std::string_view(data).substr(off, piece));
  }
  (*h)->wait_hashed(n);
  std::string hashed_part;
  for (std::size_t off = 0; off < data.size() && off < (std::size_t{64} << 10) * piece; off += piece) {
    hashed_part += data.substr(off, piece);
  }
  CHECK((*h)->hex_digest() == kbfleet::hash::sha256_hex(hashed_part));
}

TEST_CASE("an empty stream has the digest of nothing", "[common][hash]") {
  auto h = BackgroundSha256::start();
  REQUIRE(h);
  CHECK((*h)->hex_digest() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
