// write_sliced / pwrite_sliced: every byte lands where asked, and no single write(2) is larger
// than the slice (observed through a SOCK_SEQPACKET socketpair, where each write is one packet).
#include "common/posix/file_write.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "common/posix/fd.hpp"
#include "tests/support/temp_dir.hpp"

using kbfleet::posix::Fd;

namespace {

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return s;
}

std::string read_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd);
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  return out;
}

}  // namespace

TEST_CASE("write_sliced issues no write larger than the slice and writes every byte in order") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  Fd w(sv[0]), r(sv[1]);
  const std::string data = pattern(10 * 4096 + 123);
  REQUIRE(kbfleet::posix::write_sliced(w.get(), data, "socketpair", 4096));
  w.reset();  // the reader sees the end after the last packet
  std::string got;
  std::vector<std::size_t> packets;
  std::string buf(65536, '\0');
  for (ssize_t n; (n = ::recv(r.get(), buf.data(), buf.size(), 0)) > 0;) {
    packets.push_back(static_cast<std::size_t>(n));
    got.append(buf.data(), static_cast<std::size_t>(n));
  }
  CHECK(got == data);
  REQUIRE(packets.size() == 11);
  for (std::size_t p : packets) CHECK(p <= 4096);
}

TEST_CASE("pwrite_sliced writes at the offset, leaves the fd's offset and the bytes around it alone") {
  kbfleet::test::TempDir dir;
  const std::string path = (dir.path() / "f").native();
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd);
  const std::string head = pattern(5000);
  REQUIRE(kbfleet::posix::write_sliced(fd.get(), head, path));
  const std::string data = pattern(3 * kbfleet::posix::kWriteSliceBytes + 17);
  REQUIRE(kbfleet::posix::pwrite_sliced(fd.get(), data, 1000, path));
  CHECK(::lseek(fd.get(), 0, SEEK_CUR) == 5000);
  const std::string all = read_file(path);
  REQUIRE(all.size() == 1000 + data.size());
  CHECK(all.substr(0, 1000) == head.substr(0, 1000));
  CHECK(all.substr(1000) == data);
}

TEST_CASE("pwrite_sliced and write_sliced report a failed write as IO_ERROR naming the file") {
  Fd ro(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  REQUIRE(ro);
  auto st = kbfleet::posix::write_sliced(ro.get(), "x", "/dev/null");
  REQUIRE_FALSE(st);
  CHECK(st.error().code == kbfleet::ErrorCode::kIoError);
  CHECK(st.error().message.find("/dev/null") != std::string::npos);
  CHECK_FALSE(kbfleet::posix::pwrite_sliced(ro.get(), "x", 0, "/dev/null"));
}
