// The blob writer thread: chunks handed over as ZeroMQ messages are written and verified off the
// caller's thread, results come back through an eventfd, and one upload never has more than its
// window of chunks queued or unacknowledged. Real files in a per-test directory.
#include "broker/cas/blob_writer.hpp"

#include <poll.h>
#include <stdlib.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "common/hash/sha256.hpp"
#include "tests/broker/cas/cas_test_support.hpp"

namespace fs = std::filesystem;
using kbfleet::ErrorCode;
using kbfleet::broker::BlobWriter;
using kbfleet::broker::Cas;

namespace {

using kbfleet::broker::testing::pattern;
using kbfleet::broker::testing::TempDir;

zmq::message_t message(std::string_view bytes) { return zmq::message_t(bytes.data(), bytes.size()); }

std::unique_ptr<BlobWriter> start_writer() {
  auto w = BlobWriter::start();
  REQUIRE(w);
  return std::move(*w);
}

// Waits (poll on ready_fd, bounded) until at least `n` results arrived; fails the test at the
// deadline. Returns every result that arrived.
std::vector<BlobWriter::Done> take(BlobWriter& w, std::size_t n) {
  std::vector<BlobWriter::Done> out;
  for (int turns = 0; out.size() < n && turns < 100; ++turns) {
    pollfd p{w.ready_fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) >= 0);
    for (auto& d : w.take()) out.push_back(std::move(d));
  }
  REQUIRE(out.size() >= n);
  return out;
}

std::size_t temp_files(const fs::path& data) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(data / "cas" / "tmp")) ++n;
  return n;
}

}  // namespace

TEST_CASE("chunks handed to the blob writer are stored, acknowledged in order and committed under their hash",
          "[broker][cas][writer]") {
  TempDir dir;
  auto cas = Cas::open(dir.path());
  REQUIRE(cas);
  auto writer = start_writer();
  const std::string data = pattern((5 << 20) + 17);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  auto up = cas->begin("", static_cast<std::int64_t>(data.size()));
  REQUIRE(up);
  auto handle = writer->adopt(std::move(*up), {1 << 20, 2});

  std::int64_t sent = 0;
  std::int64_t acked = 0;
  std::size_t in_flight = 0;
  while (acked < static_cast<std::int64_t>(data.size())) {
    while (sent < static_cast<std::int64_t>(data.size()) && in_flight < 2) {
      auto n = std::min<std::int64_t>(1 << 20, static_cast<std::int64_t>(data.size()) - sent);
      REQUIRE(handle.append(sent, message(std::string_view(data).substr(static_cast<std::size_t>(sent), static_cast<std::size_t>(n)))));
      sent += n;
      ++in_flight;
    }
    for (const auto& done : take(*writer, 1)) {
      REQUIRE(done.status);
      CHECK(done.upload == handle.id());
      CHECK(done.op == BlobWriter::Op::kAppend);
      CHECK(done.received > acked);  // acknowledged in order
      acked = done.received;
      --in_flight;
    }
  }
  handle.commit(sha);
  auto committed = take(*writer, 1);
  CHECK(committed[0].op == BlobWriter::Op::kCommit);
  REQUIRE(committed[0].status);
  CHECK(cas->contains(sha));
  CHECK(fs::file_size(cas->path_of(sha)) == data.size());
  CHECK(temp_files(dir.path()) == 0);
}

TEST_CASE("a chunk beyond the window is refused while the earlier ones are unacknowledged, and accepted after",
          "[broker][cas][writer]") {
  TempDir dir;
  auto cas = Cas::open(dir.path());
  REQUIRE(cas);
  auto writer = start_writer();
  const std::string chunk = pattern(4096);
  auto up = cas->begin("", 4096 * 4);
  REQUIRE(up);
  auto handle = writer->adopt(std::move(*up), {4096, 2});
  REQUIRE(handle.append(0, message(chunk)));
  REQUIRE(handle.append(4096, message(chunk)));
  // Whether or not the thread has written the first two, their results were not taken (the
  // broker has not acknowledged them), so a third chunk would exceed the window.
  auto over = handle.append(8192, message(chunk));
  REQUIRE_FALSE(over);
  CHECK(over.error().code == ErrorCode::kQuotaExceeded);
  CHECK(over.error().message.find("window") != std::string::npos);

  auto done = take(*writer, 2);
  CHECK(done[1].received == 8192);
  REQUIRE(handle.append(8192, message(chunk)));  // the window's credit came back

  SECTION("a chunk larger than chunk_bytes is refused before it is queued") {
    auto big = handle.append(12288, message(pattern(4097)));
    REQUIRE_FALSE(big);
    CHECK(big.error().code == ErrorCode::kInvalidArgument);
    CHECK(big.error().message.find("chunk_bytes") != std::string::npos);
  }
}

TEST_CASE("a chunk the upload refuses comes back as an error result, and a bad hash is HASH_MISMATCH with no blob",
          "[broker][cas][writer]") {
  TempDir dir;
  auto cas = Cas::open(dir.path());
  REQUIRE(cas);
  auto writer = start_writer();
  const std::string data = pattern(10000);
  auto up = cas->begin("", static_cast<std::int64_t>(data.size()));
  REQUIRE(up);
  auto handle = writer->adopt(std::move(*up), {1 << 20, 8});

  SECTION("a chunk at the wrong offset") {
    REQUIRE(handle.append(100, message(data)));
    auto done = take(*writer, 1);
    REQUIRE_FALSE(done[0].status);
    CHECK(done[0].status.error().code == ErrorCode::kInvalidArgument);
    CHECK(done[0].status.error().message.find("expected offset 0") != std::string::npos);
  }
  SECTION("bytes that do not hash to the declared sha256") {
    std::string corrupted = data;
    corrupted[5000] ^= 1;
    REQUIRE(handle.append(0, message(corrupted)));
    handle.commit(kbfleet::hash::sha256_hex(data));
    auto done = take(*writer, 2);
    REQUIRE(done[0].status);
    REQUIRE_FALSE(done[1].status);
    CHECK(done[1].status.error().code == ErrorCode::kHashMismatch);
    CHECK_FALSE(cas->contains(kbfleet::hash::sha256_hex(data)));
    CHECK_FALSE(cas->contains(kbfleet::hash::sha256_hex(corrupted)));
  }
  handle = {};  // abandons what is left; its temp file goes on the thread
  writer.reset();  // joins after the queued abandon ran or was dropped (then removed at stop)
  CHECK(temp_files(dir.path()) == 0);
}

TEST_CASE("dropping an upload's handle mid-transfer removes its temp file and drops its pending results",
          "[broker][cas][writer]") {
  TempDir dir;
  auto cas = Cas::open(dir.path());
  REQUIRE(cas);
  auto writer = start_writer();
  const std::string chunk = pattern(1 << 20);
  {
    auto up = cas->begin("", 8 << 20);
    REQUIRE(up);
    auto handle = writer->adopt(std::move(*up), {1 << 20, 8});
    for (int i = 0; i < 4; ++i) REQUIRE(handle.append(std::int64_t{i} << 20, message(chunk)));
  }
  // A later upload's result arrives after everything the dropped one had queued (one FIFO).
  auto up = cas->begin("", 1);
  REQUIRE(up);
  auto other = writer->adopt(std::move(*up), {1 << 20, 8});
  REQUIRE(other.append(0, message("x")));
  auto done = take(*writer, 1);
  CHECK(done[0].upload == other.id());  // none of the dropped upload's four results
  CHECK(temp_files(dir.path()) == 1);   // only `other`'s
}

TEST_CASE("two uploads interleaved through the hashing and writing stages are each stored intact",
          "[broker][cas][writer]") {
  TempDir dir;
  auto cas = Cas::open(dir.path());
  REQUIRE(cas);
  auto writer = start_writer();
  const std::string a = pattern(5 * 65536 + 7), b = pattern(4 * 65536).substr(1000) + "tail";
  auto up_a = cas->begin("", static_cast<std::int64_t>(a.size()));
  auto up_b = cas->begin(kbfleet::hash::sha256_hex(b), static_cast<std::int64_t>(b.size()));
  REQUIRE(up_a);
  REQUIRE(up_b);
  auto ha = writer->adopt(std::move(*up_a), {65536, 8});
  auto hb = writer->adopt(std::move(*up_b), {65536, 8});
  for (std::size_t off = 0; off < std::max(a.size(), b.size()); off += 65536) {
    if (off < a.size()) REQUIRE(ha.append(static_cast<std::int64_t>(off), message(std::string_view(a).substr(off, 65536))));
    if (off < b.size()) REQUIRE(hb.append(static_cast<std::int64_t>(off), message(std::string_view(b).substr(off, 65536))));
  }
  ha.commit(kbfleet::hash::sha256_hex(a));
  hb.commit("");
  auto done = take(*writer, 6 + 4 + 2);
  for (const auto& d : done) CHECK(d.status);
  for (const std::string* data : {&a, &b}) {
    auto back = cas->read(kbfleet::hash::sha256_hex(*data), 0, static_cast<std::int64_t>(data->size()));
    REQUIRE(back);
    CHECK(*back == *data);
  }
}

TEST_CASE("after a refused chunk the chunks behind it in the pipeline are refused too and nothing is stored",
          "[broker][cas][writer]") {
  TempDir dir;
  auto cas = Cas::open(dir.path());
  REQUIRE(cas);
  auto writer = start_writer();
  const std::string data = pattern(4 * 4096);
  auto up = cas->begin("", static_cast<std::int64_t>(data.size()));
  REQUIRE(up);
  auto handle = writer->adopt(std::move(*up), {4096, 8});
  REQUIRE(handle.append(0, message(std::string_view(data).substr(0, 4096))));
  REQUIRE(handle.append(8192, message(std::string_view(data).substr(8192, 4096))));  // skips 4096
  REQUIRE(handle.append(12288, message(std::string_view(data).substr(12288, 4096))));
  auto done = take(*writer, 3);
  REQUIRE(done.size() == 3);
  CHECK(done[0].status);
  REQUIRE_FALSE(done[1].status);
  CHECK(done[1].status.error().message.find("expected offset 4096") != std::string::npos);
  REQUIRE_FALSE(done[2].status);  // the upload ended at the refused chunk
  CHECK(done[2].received == 0);
  CHECK_FALSE(cas->contains(kbfleet::hash::sha256_hex(data)));
  handle = {};
  writer.reset();
  CHECK(temp_files(dir.path()) == 0);
}
