// Reading what the task must not see: another task's workspace, a host file, /etc/shadow, the host
// root through /proc/<pid>/root, and any inode of the filesystem through open_by_handle_at.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

namespace kbfleet::attack {
namespace {

// Reads `path` (opened relative to `dirfd`) and escapes if it holds `token`.
void read_for_token(int dirfd, const std::string& path, const std::string& token, const std::string& via) {
  int fd = openat(dirfd, path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) contained(errno_text("open(" + path + ")"));
  std::string data = read_all(fd);
  close(fd);
  if (!token.empty() && data.find(token) != std::string::npos) escaped("read the secret from " + path + via);
  contained("opened " + path + " but it does not hold the secret (" + std::to_string(data.size()) + " bytes)");
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

// Input: path, token. Used for another task's workspace file and for a host file.
void read_file(const Input& in) { read_for_token(AT_FDCWD, in.get("path"), in.get("token"), ""); }

void read_shadow(const Input&) {
  int fd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
  if (fd < 0) contained(errno_text("open(/etc/shadow)"));
  std::string data = read_all(fd);
  close(fd);
  // Never print the content: the size is evidence enough.
  if (!data.empty()) escaped("read " + std::to_string(data.size()) + " bytes of /etc/shadow");
  contained("opened /etc/shadow but read nothing");
}

// Input: pid (1, or the worker's), path (a host file), token. /proc/<pid>/root is that process's
// root directory: the host's, when the task shares the host pid namespace and may follow it.
void proc_root(const Input& in) {
  read_for_token(AT_FDCWD, "/proc/" + in.get("pid") + "/root" + in.get("path"), in.get("token"), "");
}

// Input: handle_type, handle (hex bytes of a file handle the test took of a host file), token.
// The "shocker" escape: with CAP_DAC_READ_SEARCH, a handle opens any inode of the filesystem
// behind any mount fd of it, whatever the mount namespace shows. The workspace is on that
// filesystem (unless the launcher gives it its own).
void open_by_handle(const Input& in) {
  std::string hex = in.get("handle");
  if (hex.empty() || hex.size() % 2 != 0) contained("no handle in the input");
  std::size_t bytes = hex.size() / 2;
  std::unique_ptr<char[]> storage(new char[sizeof(file_handle) + bytes]);
  auto* fh = reinterpret_cast<file_handle*>(storage.get());
  fh->handle_bytes = static_cast<unsigned>(bytes);
  fh->handle_type = std::atoi(in.get("handle_type").c_str());
  for (std::size_t i = 0; i < bytes; ++i) {
    fh->f_handle[i] = static_cast<unsigned char>(hex_digit(hex[2 * i]) * 16 + hex_digit(hex[2 * i + 1]));
  }
  // Any directory the task may open serves as the mount fd: out/, which its manifest grants.
  int mount_fd = open("out", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (mount_fd < 0) contained(errno_text("open(out)"));
  int fd = open_by_handle_at(mount_fd, fh, O_RDONLY | O_CLOEXEC);
  if (fd < 0) contained(errno_text("open_by_handle_at"));
  std::string data = read_all(fd);
  if (data.find(in.get("token")) != std::string::npos) escaped("opened the host secret by its file handle");
  contained("open_by_handle_at opened a file without the secret");
}

}  // namespace kbfleet::attack
