#pragma once
// Fd: the one owner of a raw file descriptor. Move-only; closes in its destructor; close()
// returns a Result for when the error matters (e.g. after writing a file).
#include <unistd.h>

#include <utility>

#include "common/errors/error.hpp"

namespace kbfleet::posix {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  Status close();

 private:
  int fd_ = -1;
};

// pipe2(O_CLOEXEC [| extra_flags]).
struct Pipe {
  Fd read;
  Fd write;
};
Result<Pipe> make_pipe(int extra_flags = 0);

// Writes all bytes, retrying EINTR and short writes.
Status write_all(int fd, std::string_view bytes);

}  // namespace kbfleet::posix
