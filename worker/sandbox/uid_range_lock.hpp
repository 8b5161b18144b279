#pragma once
// The host uids a worker's tasks run as (--task-uid-base + slot), held exclusively by that worker
// on this host. Two workers with the same range would run tasks of different workers as the same
// uid, so one task could signal, ptrace or read another (identity.hpp's promise is per uid).
// The range is a POSIX record lock on bytes [base, base + count) of one file: the kernel drops it
// when the worker exits or dies, so a crash leaves nothing stale, and it names the holder's pid.
#include <cstdint>
#include <filesystem>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"

namespace kbfleet::worker {

class UidRangeLock {
 public:
  static constexpr const char* kDefaultPath = "/run/kbfleet/task-uids.lock";
  // Without --task-uid-base, a worker takes the first free block of kAutoStep uids from
  // kAutoFirst (slots are at most 4096, so blocks never overlap): up to kAutoBlocks workers.
  static constexpr std::uint32_t kAutoFirst = 200000;
  static constexpr std::uint32_t kAutoStep = 4096;
  static constexpr int kAutoBlocks = 64;

  // Uids [base, base + count). INVALID_ARGUMENT naming the holder's pid when another process
  // holds one of them; IO_ERROR when the lock file cannot be opened.
  [[nodiscard]] static Result<UidRangeLock> take(std::uint32_t base, int count,
                                                 const std::filesystem::path& file = kDefaultPath);
  // The first free block of the automatic ones, as above.
  [[nodiscard]] static Result<UidRangeLock> take_first_free(int count, const std::filesystem::path& file = kDefaultPath);

  std::uint32_t base() const { return base_; }

 private:
  UidRangeLock(std::uint32_t base, posix::Fd fd) : base_(base), fd_(std::move(fd)) {}
  std::uint32_t base_;
  // The process's only descriptor of the file: closing any descriptor of it would drop the lock.
  posix::Fd fd_;
};

}  // namespace kbfleet::worker
