#include "common/posix/fd.hpp"

#include <fcntl.h>

#include <cerrno>

namespace kbfleet::posix {

Status Fd::close() {
  if (fd_ < 0) return {};
  int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0 && errno != EINTR) return errno_error("close", std::to_string(fd), errno);
  return {};
}

Result<Pipe> make_pipe(int extra_flags) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | extra_flags) != 0) return errno_error("pipe2", "", errno);
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

Status write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("write", "fd " + std::to_string(fd), errno);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

}  // namespace kbfleet::posix
