#include "broker/cas/cas.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/hash/sha256.hpp"
#include "tests/broker/cas/cas_test_support.hpp"

namespace fs = std::filesystem;
using kbfleet::ErrorCode;
using kbfleet::broker::Cas;

namespace {

using kbfleet::broker::testing::pattern;
using kbfleet::broker::testing::TempDir;

std::size_t count_entries(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

Cas open_store(const fs::path& dir) {
  auto cas = Cas::open(dir);
  REQUIRE(cas);
  return std::move(*cas);
}

// Uploads `data` in chunks of `chunk` bytes and commits.
kbfleet::Status put(Cas& cas, const std::string& data, std::size_t chunk, const std::string& sha) {
  auto up = cas.begin(sha, static_cast<std::int64_t>(data.size()));
  REQUIRE(up);
  for (std::size_t off = 0; off < data.size(); off += chunk) {
    REQUIRE((*up)->append(static_cast<std::int64_t>(off), std::string_view(data).substr(off, chunk)));
  }
  return (*up)->commit();
}

}  // namespace

TEST_CASE("an artifact uploaded in chunks is stored at its hash path and reads back in pieces", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(1'000'003);
  const std::string sha = kbfleet::hash::sha256_hex(data);

  REQUIRE_FALSE(cas.contains(sha));
  REQUIRE(put(cas, data, 256 * 1024, sha));

  const fs::path expected = dir.path() / "cas" / "sha256" / sha.substr(0, 2) / sha;
  CHECK(cas.path_of(sha) == expected);
  CHECK(fs::is_regular_file(expected));
  CHECK(cas.contains(sha));
  auto size = cas.size_of(sha);
  REQUIRE(size);
  CHECK(*size == static_cast<std::int64_t>(data.size()));
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);

  std::string back;
  for (std::int64_t off = 0; off < *size;) {
    auto piece = cas.read(sha, off, 300'000);
    REQUIRE(piece);
    REQUIRE_FALSE(piece->empty());
    back += *piece;
    off += static_cast<std::int64_t>(piece->size());
  }
  CHECK(back == data);

  SECTION("a read at the end is empty and a read past it is refused") {
    auto at_end = cas.read(sha, *size, 10);
    REQUIRE(at_end);
    CHECK(at_end->empty());
    auto past = cas.read(sha, *size + 1, 10);
    REQUIRE_FALSE(past);
    CHECK(past.error().code == ErrorCode::kInvalidArgument);
    auto negative = cas.read(sha, -1, 10);
    REQUIRE_FALSE(negative);
    CHECK(negative.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("a read is capped at 4 MiB", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(static_cast<std::size_t>(kbfleet::broker::kMaxReadBytes) + 1000);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  REQUIRE(put(cas, data, 1 << 20, sha));

  auto piece = cas.read(sha, 0, std::int64_t{1} << 40);
  REQUIRE(piece);
  CHECK(static_cast<std::int64_t>(piece->size()) == kbfleet::broker::kMaxReadBytes);
  auto rest = cas.read(sha, kbfleet::broker::kMaxReadBytes, std::int64_t{1} << 40);
  REQUIRE(rest);
  CHECK(*rest == data.substr(static_cast<std::size_t>(kbfleet::broker::kMaxReadBytes)));
}

TEST_CASE("an upload whose content does not match its declared hash leaves nothing behind", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = "hello artifact";
  const std::string declared = kbfleet::hash::sha256_hex("something else");
  const std::string actual = kbfleet::hash::sha256_hex(data);

  auto status = put(cas, data, 4, declared);
  REQUIRE_FALSE(status);
  CHECK(status.error().code == ErrorCode::kHashMismatch);
  CHECK(status.error().message == "artifact hash mismatch: declared " + declared + ", received " + actual);
  CHECK_FALSE(cas.contains(declared));
  CHECK_FALSE(fs::exists(cas.path_of(declared)));
  CHECK_FALSE(cas.contains(actual));
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
}

TEST_CASE("chunks out of order, beyond the declared size, or after commit are refused", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = "0123456789";
  const std::string sha = kbfleet::hash::sha256_hex(data);
  auto up = cas.begin(sha, 10);
  REQUIRE(up);
  REQUIRE((*up)->append(0, "01234"));

  SECTION("a gap") {
    auto s = (*up)->append(7, "789");
    REQUIRE_FALSE(s);
    CHECK(s.error().code == ErrorCode::kInvalidArgument);
    CHECK(s.error().message == "artifact chunk at offset 7, expected offset 5");
  }
  SECTION("a resend of an earlier offset") {
    auto s = (*up)->append(0, "01234");
    REQUIRE_FALSE(s);
    CHECK(s.error().code == ErrorCode::kInvalidArgument);
  }
  SECTION("more bytes than declared") {
    auto s = (*up)->append(5, "56789X");
    REQUIRE_FALSE(s);
    CHECK(s.error().code == ErrorCode::kInvalidArgument);
    CHECK(s.error().message == "artifact chunk would exceed the declared size of 10 bytes");
  }
  SECTION("a commit before all bytes arrived") {
    auto s = (*up)->commit();
    REQUIRE_FALSE(s);
    CHECK(s.error().code == ErrorCode::kInvalidArgument);
    CHECK(s.error().message == "artifact incomplete: declared 10 bytes, received 5");
    CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
  }
  SECTION("anything after a commit") {
    REQUIRE((*up)->append(5, "56789"));
    REQUIRE((*up)->commit());
    CHECK_FALSE((*up)->append(10, ""));
    CHECK_FALSE((*up)->commit());
    CHECK(cas.contains(sha));
  }
  CHECK((*up)->received() >= 5);
}

TEST_CASE("an upload of an invalid size is refused", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string sha = kbfleet::hash::sha256_hex("x");
  for (std::int64_t size : {std::int64_t{-1}, kbfleet::broker::kMaxArtifactBytes + 1}) {
    auto up = cas.begin(sha, size);
    REQUIRE_FALSE(up);
    CHECK(up.error().code == ErrorCode::kInvalidArgument);
  }
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
}

TEST_CASE("an abandoned upload removes its temp file", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string sha = kbfleet::hash::sha256_hex("partial");
  {
    auto up = cas.begin(sha, 7);
    REQUIRE(up);
    REQUIRE((*up)->append(0, "par"));
    CHECK(count_entries(dir.path() / "cas" / "tmp") == 1);
  }
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
  CHECK_FALSE(cas.contains(sha));
}

TEST_CASE("hash strings that are not 64 lowercase hex are refused everywhere", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string valid = kbfleet::hash::sha256_hex("x");
  // Plant a file that a path-traversing hash would reach, to prove it is never opened.
  std::ofstream(dir.path() / "secret") << "secret";

  std::string upper = valid;
  upper[0] = 'A';
  const std::string bad[] = {
      "",
      "../../etc/passwd",
      "../secret",
      "../../secret" + std::string(52, '0'),
      std::string(63, 'a'),
      std::string(65, 'a'),
      upper,
      std::string(62, 'a') + "/a",
      std::string(63, 'a') + std::string(1, '\0'),
      std::string(64, 'g'),
  };
  for (const std::string& sha : bad) {
    CAPTURE(sha);
    CHECK_FALSE(cas.contains(sha));
    CHECK(cas.path_of(sha).empty());
    if (!sha.empty()) {  // empty: the hash is declared at commit (next test cases)
      auto up = cas.begin(sha, 1);
      REQUIRE_FALSE(up);
      CHECK(up.error().code == ErrorCode::kInvalidArgument);
    }
    auto declared_late = cas.begin("", 1);
    REQUIRE(declared_late);
    REQUIRE((*declared_late)->append(0, "x"));
    auto committed = (*declared_late)->commit(sha);
    REQUIRE_FALSE(committed);
    CHECK(committed.error().code == ErrorCode::kInvalidArgument);
    auto r = cas.read(sha, 0, 10);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    auto sz = cas.size_of(sha);
    REQUIRE_FALSE(sz);
    CHECK(sz.error().code == ErrorCode::kInvalidArgument);
  }
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
}

TEST_CASE("reading or sizing a blob that is not stored reports ARTIFACT_NOT_FOUND", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string sha = kbfleet::hash::sha256_hex("never uploaded");
  auto r = cas.read(sha, 0, 10);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ErrorCode::kArtifactNotFound);
  CHECK(r.error().message == "artifact " + sha + " is not in the store");
  auto sz = cas.size_of(sha);
  REQUIRE_FALSE(sz);
  CHECK(sz.error().code == ErrorCode::kArtifactNotFound);
}

TEST_CASE("reopening the store removes temp files left by a previous run and keeps blobs", "[broker][cas]") {
  TempDir dir;
  const std::string data = "kept";
  const std::string sha = kbfleet::hash::sha256_hex(data);
  {
    Cas cas = open_store(dir.path());
    REQUIRE(put(cas, data, 2, sha));
  }
  // What a crash mid-upload leaves: temp files nobody owns.
  std::ofstream(dir.path() / "cas" / "tmp" / "upload-stale1") << "half";
  std::ofstream(dir.path() / "cas" / "tmp" / "upload-stale2") << "";
  REQUIRE(count_entries(dir.path() / "cas" / "tmp") == 2);

  Cas cas = open_store(dir.path());
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
  CHECK(cas.contains(sha));
  auto r = cas.read(sha, 0, 100);
  REQUIRE(r);
  CHECK(*r == data);
}

TEST_CASE("uploading a blob that is already stored commits and keeps one copy", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(5000);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  REQUIRE(put(cas, data, 1000, sha));
  REQUIRE(put(cas, data, 3000, sha));

  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
  CHECK(count_entries(cas.path_of(sha).parent_path()) == 1);
  auto r = cas.read(sha, 0, 10000);
  REQUIRE(r);
  CHECK(*r == data);
}

TEST_CASE("an empty artifact can be stored and read", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string sha = kbfleet::hash::sha256_hex("");
  auto up = cas.begin(sha, 0);
  REQUIRE(up);
  REQUIRE((*up)->commit());
  CHECK(cas.contains(sha));
  auto r = cas.read(sha, 0, 10);
  REQUIRE(r);
  CHECK(r->empty());
}

TEST_CASE("an upload begun without its hash is stored under the hash declared when it ends", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  // Larger than kWritebackBytes, so write-back is started during the upload.
  const std::string data = pattern(static_cast<std::size_t>(kbfleet::broker::kWritebackBytes) + 3 * (1 << 20) + 17);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  auto up = cas.begin("", static_cast<std::int64_t>(data.size()));
  REQUIRE(up);
  for (std::size_t off = 0; off < data.size(); off += 1 << 20) {
    REQUIRE((*up)->append(static_cast<std::int64_t>(off), std::string_view(data).substr(off, 1 << 20)));
  }
  REQUIRE((*up)->commit(sha));
  CHECK(cas.contains(sha));
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
  auto back = cas.read(sha, 0, kbfleet::broker::kMaxReadBytes);
  REQUIRE(back);
  CHECK(*back == data.substr(0, static_cast<std::size_t>(kbfleet::broker::kMaxReadBytes)));
}

TEST_CASE("a hash declared at the end that the bytes do not have, or that differs from the first, leaves nothing behind",
          "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(5000);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  const std::string other = kbfleet::hash::sha256_hex("other");
  SECTION("begun without a hash, ended with the wrong one") {
    auto up = cas.begin("", 5000);
    REQUIRE(up);
    REQUIRE((*up)->append(0, data));
    auto st = (*up)->commit(other);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::kHashMismatch);
    CHECK(st.error().message.find(other) != std::string::npos);
    CHECK_FALSE(cas.contains(other));
  }
  SECTION("begun without a hash, ended without one") {
    auto up = cas.begin("", 5000);
    REQUIRE(up);
    REQUIRE((*up)->append(0, data));
    auto st = (*up)->commit();
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::kInvalidArgument);
    CHECK(st.error().message.find("must declare it") != std::string::npos);
  }
  SECTION("begun with one hash, ended with another") {
    auto up = cas.begin(sha, 5000);
    REQUIRE(up);
    REQUIRE((*up)->append(0, data));
    auto st = (*up)->commit(other);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::kHashMismatch);
  }
  CHECK_FALSE(cas.contains(sha));
  CHECK(count_entries(dir.path() / "cas" / "tmp") == 0);
}

TEST_CASE("read_into fills the caller's buffer, at most 4 MiB and never past the end", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(10'000);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  REQUIRE(put(cas, data, 4096, sha));
  std::string buf(4000, '\0');
  auto got = cas.read_into(sha, 9000, buf);
  REQUIRE(got);
  CHECK(*got == 1000);
  CHECK(buf.substr(0, 1000) == data.substr(9000));
  got = cas.read_into(sha, 0, buf);
  REQUIRE(got);
  CHECK(*got == 4000);
  CHECK(buf == data.substr(0, 4000));
  got = cas.read_into(sha, 10'000, buf);
  REQUIRE(got);
  CHECK(*got == 0);
  auto past = cas.read_into(sha, 10'001, buf);
  REQUIRE_FALSE(past);
  CHECK(past.error().code == ErrorCode::kInvalidArgument);
  auto missing = cas.read_into(kbfleet::hash::sha256_hex("absent"), 0, buf);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == ErrorCode::kArtifactNotFound);
}

TEST_CASE("without fsync the store vouches only for blobs stored since it was opened, and replaces others",
          "[broker][cas]") {
  TempDir dir;
  const std::string data = pattern(70'000);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  {
    auto cas = Cas::open(dir.path(), Cas::Sync::kNone);
    REQUIRE(cas);
    REQUIRE(put(*cas, data, 4096, sha));
    CHECK(cas->contains(sha));
  }
  // A crash of the machine may have torn a blob that was never fsynced: here, its tail is lost.
  const fs::path blob = dir.path() / "cas" / "sha256" / sha.substr(0, 2) / sha;
  fs::resize_file(blob, 1000);
  auto cas = Cas::open(dir.path(), Cas::Sync::kNone);
  REQUIRE(cas);
  CHECK_FALSE(cas->contains(sha));  // so a worker uploads it again instead of reusing it
  REQUIRE(put(*cas, data, 4096, sha));
  CHECK(cas->contains(sha));
  CHECK(fs::file_size(blob) == data.size());
  auto back = cas->read(sha, 0, 100'000);
  REQUIRE(back);
  CHECK(*back == data);
  SECTION("a store opened with fsync trusts what it finds") {
    CHECK(open_store(dir.path()).contains(sha));
  }
}

TEST_CASE("an upload written in halves (hash ahead of write) stores the same blob as append", "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(3 * 65536 + 11);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  auto up = cas.begin("", static_cast<std::int64_t>(data.size()));
  REQUIRE(up);
  const std::string_view v(data);
  // The hashing side runs two chunks ahead of the writing side, as the blob writer's stages may.
  REQUIRE((*up)->hash(0, v.substr(0, 65536)));
  REQUIRE((*up)->hash(65536, v.substr(65536, 65536)));
  REQUIRE((*up)->write(0, v.substr(0, 65536)));
  REQUIRE((*up)->hash(131072, v.substr(131072)));
  REQUIRE((*up)->write(65536, v.substr(65536, 65536)));
  CHECK((*up)->received() == 131072);
  REQUIRE((*up)->write(131072, v.substr(131072)));
  REQUIRE((*up)->commit(sha));
  auto back = cas.read(sha, 0, static_cast<std::int64_t>(data.size()));
  REQUIRE(back);
  CHECK(*back == data);
}

TEST_CASE("an upload in halves refuses a write ahead of the hash, a hash out of order, and a commit of unhashed bytes",
          "[broker][cas]") {
  TempDir dir;
  Cas cas = open_store(dir.path());
  const std::string data = pattern(8192);
  const std::string_view v(data);
  auto up = cas.begin("", 8192);
  REQUIRE(up);
  auto early = (*up)->write(0, v.substr(0, 4096));  // nothing hashed yet
  REQUIRE_FALSE(early);
  CHECK(early.error().code == ErrorCode::kInvalidArgument);
  CHECK((*up)->received() == 0);
  auto skipped = (*up)->hash(4096, v.substr(4096));  // the first 4096 bytes were not hashed
  REQUIRE_FALSE(skipped);
  CHECK(skipped.error().code == ErrorCode::kInvalidArgument);
  auto too_long = (*up)->hash(0, data + "x");
  REQUIRE_FALSE(too_long);
  CHECK(too_long.error().code == ErrorCode::kInvalidArgument);

  // append() after a hash() that ran ahead would write unhashed bytes: refused.
  REQUIRE((*up)->hash(0, v.substr(0, 4096)));
  REQUIRE((*up)->write(0, v.substr(0, 4096)));
  REQUIRE((*up)->hash(4096, v.substr(4096)));
  auto mixed = (*up)->append(4096, v.substr(4096));
  REQUIRE_FALSE(mixed);
  CHECK(mixed.error().code == ErrorCode::kInvalidArgument);
  REQUIRE((*up)->write(4096, v.substr(4096)));
  REQUIRE((*up)->commit(kbfleet::hash::sha256_hex(data)));
  CHECK(cas.contains(kbfleet::hash::sha256_hex(data)));
}
