// Writing outside what permissions.fs.write allows, and links that point the worker's artifact
// collector (or the task itself) at host files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

namespace kbfleet::attack {

// Input: path (absolute, or relative to the workspace), token. Creates a new file there.
void write_file(const Input& in) {
  std::string path = in.get("path");
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) contained(errno_text("open(" + path + ", O_CREAT)"));
  std::string token = in.get("token");
  ssize_t n = write(fd, token.data(), token.size());
  close(fd);
  if (n != static_cast<ssize_t>(token.size())) contained(errno_text("write(" + path + ")"));
  escaped("created " + path);
}

// Input: path (a host file), token. The link itself is only a string; reading through it is the
// escape, and resolves in the task's own view of the filesystem.
void symlink_read(const Input& in) {
  std::string target = in.get("path");
  if (symlink(target.c_str(), "out/link") != 0) contained(errno_text("symlink(out/link)"));
  int fd = open("out/link", O_RDONLY | O_CLOEXEC);
  if (fd < 0) contained(errno_text("open(out/link -> " + target + ")"));
  std::string data = read_all(fd);
  close(fd);
  if (data.find(in.get("token")) != std::string::npos) escaped("read the secret through out/link -> " + target);
  contained("out/link opened a file without the secret");
}

// Input: path (a host file), dir (its directory). Leaves declared artifacts that are symlinks to a
// host file and through a symlinked directory; the worker, not the task, would read them.
void symlink_artifact(const Input& in) {
  if (symlink(in.get("path").c_str(), "out/leak.txt") != 0) contained(errno_text("symlink(out/leak.txt)"));
  if (symlink(in.get("dir").c_str(), "out/leakdir") != 0) contained(errno_text("symlink(out/leakdir)"));
  planted("out/leak.txt -> " + in.get("path") + ", out/leakdir -> " + in.get("dir"));
}

// Input: path (a host file), token. A hard link is a second name for the host inode inside the
// workspace: readable here, and collected as an ordinary file if declared as an artifact.
void hardlink(const Input& in) {
  std::string target = in.get("path");
  if (link(target.c_str(), "out/hard.txt") != 0) contained(errno_text("link(" + target + ", out/hard.txt)"));
  int fd = open("out/hard.txt", O_RDONLY | O_CLOEXEC);
  if (fd < 0) contained(errno_text("linked, but open(out/hard.txt)"));
  std::string data = read_all(fd);
  close(fd);
  if (data.find(in.get("token")) != std::string::npos) {
    escaped("hard-linked " + target + " into out/hard.txt and read the secret");
  }
  contained("out/hard.txt does not hold the secret");
}

// Not an attack: proves the binary runs and that out/ is writable as the manifest allows, so a
// CONTAINED elsewhere is not just a broken sandbox. Input: token.
void control(const Input& in) {
  int fd = open("out/control.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) verdict_exit("CONTROL FAILED: " + errno_text("open(out/control.txt)"), 1);
  std::string token = in.get("token");
  if (write(fd, token.data(), token.size()) != static_cast<ssize_t>(token.size())) {
    verdict_exit("CONTROL FAILED: " + errno_text("write(out/control.txt)"), 1);
  }
  close(fd);
  verdict_exit("CONTROL OK: wrote out/control.txt", 0);
}

}  // namespace kbfleet::attack
