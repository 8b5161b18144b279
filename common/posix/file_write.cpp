#include "common/posix/file_write.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace kbfleet::posix {

Status write_sliced(int fd, std::string_view bytes, std::string_view what, std::size_t slice) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), std::min(bytes.size(), slice));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("write", what, errno);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Status pwrite_sliced(int fd, std::string_view bytes, off_t offset, std::string_view what, std::size_t slice) {
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd, bytes.data(), std::min(bytes.size(), slice), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("pwrite", what, errno);
    bytes.remove_prefix(static_cast<std::size_t>(n));
    offset += n;
  }
  return {};
}

}  // namespace kbfleet::posix
