// Hash-while-send: the chunks read for sending are the file's bytes, the digest is the file's,
// and the buffers outlive both the message and the hashing thread's use of them.
#include "worker/artifacts/send_hasher.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "common/hash/sha256.hpp"
#include "common/posix/fd.hpp"

namespace fs = std::filesystem;
using kbfleet::worker::SendHasher;

namespace {

std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

// A real file with `data` in a per-test directory, open for reading.
struct TempFile {
  explicit TempFile(const std::string& data) {
    std::string tmpl = (fs::temp_directory_path() / "kbfleet-sendhash-XXXXXX").native();
    int fd = ::mkstemp(tmpl.data());
    REQUIRE(fd >= 0);
    path = tmpl;
    REQUIRE(kbfleet::posix::write_all(fd, data));
    ::close(fd);
    read = kbfleet::posix::Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(read);
  }
  ~TempFile() { ::unlink(path.c_str()); }
  std::string path;
  kbfleet::posix::Fd read;
};

}  // namespace

TEST_CASE("chunks read for sending hold the file's bytes and hash to the file's digest", "[worker][artifacts]") {
  const std::string data = pattern((40 << 20) + 11);  // more chunks than kMaxPending
  TempFile file(data);
  auto h = SendHasher::start();
  REQUIRE(h);
  std::vector<zmq::message_t> sent;  // kept past hashing, as ZeroMQ may keep a message
  std::string joined;
  const std::size_t chunk = 1 << 20;
  for (std::size_t off = 0; off < data.size(); off += chunk) {
    const std::size_t n = std::min(chunk, data.size() - off);
    auto m = (*h)->read_chunk(file.read.get(), static_cast<std::int64_t>(off), n);
    REQUIRE(m);
    REQUIRE(m->size() == n);
    joined.append(static_cast<const char*>(m->data()), m->size());
    if (off % (8 * chunk) == 0) {
      sent.push_back(std::move(*m));
    }  // the others are dropped at once, like a message ZeroMQ sent before the hash was done
  }
  CHECK(joined == data);
  CHECK((*h)->hex_digest() == kbfleet::hash::sha256_hex(data));
}

TEST_CASE("a chunk past the end of the file (it shrank) is IO_ERROR", "[worker][artifacts]") {
  TempFile file(pattern(1000));
  auto h = SendHasher::start();
  REQUIRE(h);
  auto m = (*h)->read_chunk(file.read.get(), 500, 1000);
  REQUIRE_FALSE(m);
  CHECK(m.error().code == kbfleet::ErrorCode::kIoError);
  CHECK(m.error().message.find("changed") != std::string::npos);
}
