#include "worker/sandbox/path_identities.hpp"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <string>
#include <system_error>

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;

// Every way a directory entry can come to name another inode: created (also by link), removed,
// renamed away or into place; and the directory itself removed or moved (its parent sees that
// too, but it may be the root of a mount).
constexpr std::uint32_t kWatchMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                                     IN_MOVE_SELF | IN_ONLYDIR;

// `dir` and each of its ancestors, into `out`.
void add_ancestors(fs::path dir, std::set<fs::path>& out) {
  for (;;) {
    out.insert(dir);
    if (!dir.has_relative_path()) return;
    dir = dir.parent_path();
  }
}

// The directories to watch for `path`: those it is written under, and those it lies under once
// symlinks on the way are resolved (/lib64/x with /lib64 -> usr/lib64 lives in /usr/lib64).
void add_dirs_of(const fs::path& path, std::set<fs::path>& out) {
  const fs::path parent = path.lexically_normal().parent_path();
  add_ancestors(parent, out);
  std::error_code ec;
  fs::path real = fs::canonical(parent, ec);
  if (!ec) add_ancestors(real, out);
}

// An inotify fd watching every directory on the way to `paths`, or an empty Fd if inotify is
// not to be had (then every check is a full one).
posix::Fd watch_dirs(const std::vector<fs::path>& paths) {
  posix::Fd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd) return fd;
  std::set<fs::path> dirs;
  for (const auto& p : paths) add_dirs_of(p, dirs);
  for (const auto& d : dirs) {
    // A missing directory is fine (its path fails the lstat below, if it matters); a limit
    // reached is not: without that watch a change could go unseen.
    if (::inotify_add_watch(fd.get(), d.c_str(), kWatchMask) < 0 && errno != ENOENT && errno != ENOTDIR) {
      return posix::Fd();
    }
  }
  return fd;
}

}  // namespace

Result<PathIdentities> PathIdentities::take(const std::vector<fs::path>& paths, Clock::time_point now) {
  PathIdentities ids;
  ids.paths_ = paths;
  ids.inotify_ = watch_dirs(paths);
  for (const auto& p : paths) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) < 0) return errno_error("lstat", p.string(), errno);
    ids.identities_.push_back({st.st_dev, st.st_ino});
  }
  ids.last_full_ = now;
  return ids;
}

bool PathIdentities::unchanged(Clock::time_point now) {
  if (changed_) return false;
  // The fd is drained before the full check, so a change made during the check leaves an event
  // for the next call.
  bool events = !inotify_ || events_pending();
  if (!events && now - last_full_ < kFullCheckEvery) return true;
  if (!full_check()) {
    changed_ = true;
    return false;
  }
  last_full_ = now;
  return true;
}

bool PathIdentities::full_check() const {
  for (std::size_t i = 0; i < paths_.size(); ++i) {
    struct stat st {};
    if (::lstat(paths_[i].c_str(), &st) < 0) return false;
    if (st.st_dev != identities_[i].dev || st.st_ino != identities_[i].ino) return false;
  }
  return true;
}

bool PathIdentities::events_pending() const {
  alignas(inotify_event) char buf[4096];
  bool any = false;
  for (;;) {
    ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
    if (n > 0) {
      any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN: drained. Anything else: the fd cannot be trusted, so count it as a change.
    return any || !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
  }
}

}  // namespace kbfleet::worker
