#pragma once
// PathIdentities: whether some host paths still name the inodes they named when it was made
// (lstat: device and inode), checked cheaply. A root template binds inodes, so once one of its
// paths was replaced (ldconfig renames a new ld.so.cache into place, useradd a new passwd) the
// next task needs a new template (root_template.hpp).
//
// A full check is an lstat per path, each a path walk: ~30 of them cost ~140 us per task on the
// benchmark VM, in the worker's loop. So (tests/worker/sandbox/path_identities_test.cpp):
//  - every directory on the way to each path, as written and with symlinks resolved, is watched
//    with inotify for entries created, removed or renamed in it, and for being removed or moved
//    itself. A path cannot name another inode without one of those. A check then costs one
//    read() of the inotify fd (EAGAIN: nothing happened). Any event, an overflowed queue
//    included, makes that check a full one;
//  - what inotify cannot see, a mount placed over or removed from one of the paths, is caught by
//    a full check at least every kFullCheckEvery;
//  - without inotify (e.g. max_user_watches reached) every check is a full one.
// Not thread-safe: the caller serializes unchanged() (RootTemplates holds its mutex).
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <vector>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"

namespace kbfleet::worker {

class PathIdentities {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kFullCheckEvery{1};

  // Watches, then takes the identity of each path (in that order, so that no change between the
  // two goes unseen). Errors: IO_ERROR naming the lstat that failed.
  [[nodiscard]] static Result<PathIdentities> take(const std::vector<std::filesystem::path>& paths,
                                                   Clock::time_point now);

  // Whether every path still names the inode it named at take(). Once false, stays false.
  bool unchanged(Clock::time_point now);
  // Whether changes are watched (else every unchanged() is a full check).
  bool watched() const { return static_cast<bool>(inotify_); }

 private:
  struct Identity {
    dev_t dev;
    ino_t ino;
  };
  bool full_check() const;
  bool events_pending() const;  // reads (and drops) what the inotify fd holds

  std::vector<std::filesystem::path> paths_;
  std::vector<Identity> identities_;
  posix::Fd inotify_;
  Clock::time_point last_full_{};
  bool changed_ = false;
};

}  // namespace kbfleet::worker
