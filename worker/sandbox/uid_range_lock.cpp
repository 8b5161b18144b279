#include "worker/sandbox/uid_range_lock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

namespace kbfleet::worker {
namespace {

Result<posix::Fd> open_lock_file(const std::filesystem::path& file) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  posix::Fd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) {
    return make_error(ErrorCode::kIoError,
                      "cannot open the task uid lock " + file.string() + ": " + std::strerror(errno) +
                          " (the worker records there which host uids its tasks use; run it as root)",
                      {{"path", file.string()}});
  }
  return fd;
}

struct flock range(short type, std::uint32_t base, int count) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = static_cast<off_t>(base);
  l.l_len = static_cast<off_t>(count);
  return l;
}

// Locks the range on `fd`; false if another process holds part of it (its pid in `holder`).
Result<bool> try_lock(int fd, std::uint32_t base, int count, pid_t& holder) {
  struct flock l = range(F_WRLCK, base, count);
  if (::fcntl(fd, F_SETLK, &l) == 0) return true;
  if (errno != EACCES && errno != EAGAIN) {
    return make_error(ErrorCode::kIoError, std::string("cannot lock the task uid range: ") + std::strerror(errno), {});
  }
  struct flock probe = range(F_WRLCK, base, count);
  holder = ::fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK ? probe.l_pid : 0;
  return false;
}

std::string range_text(std::uint32_t base, int count) {
  return std::to_string(base) + "-" + std::to_string(base + static_cast<std::uint32_t>(count) - 1);
}

}  // namespace

Result<UidRangeLock> UidRangeLock::take(std::uint32_t base, int count, const std::filesystem::path& file) {
  auto fd = open_lock_file(file);
  if (!fd) return tl::unexpected(fd.error());
  pid_t holder = 0;
  auto locked = try_lock(fd->get(), base, count, holder);
  if (!locked) return tl::unexpected(locked.error());
  if (!*locked) {
    return make_error(ErrorCode::kInvalidArgument,
                      "task uids " + range_text(base, count) + " (--task-uid-base " + std::to_string(base) + ", " +
                          std::to_string(count) + " slots) are in use by another kbfleet-worker on this host (pid " +
                          std::to_string(holder) + "); give each worker its own range, e.g. --task-uid-base " +
                          std::to_string(base + kAutoStep) + ", or leave the flag out to take a free one",
                      {{"uid_base", std::to_string(base)}, {"holder_pid", std::to_string(holder)}});
  }
  return UidRangeLock(base, std::move(*fd));
}

Result<UidRangeLock> UidRangeLock::take_first_free(int count, const std::filesystem::path& file) {
  auto fd = open_lock_file(file);
  if (!fd) return tl::unexpected(fd.error());
  for (int block = 0; block < kAutoBlocks; ++block) {
    const std::uint32_t base = kAutoFirst + static_cast<std::uint32_t>(block) * kAutoStep;
    pid_t holder = 0;
    auto locked = try_lock(fd->get(), base, count, holder);
    if (!locked) return tl::unexpected(locked.error());
    if (*locked) return UidRangeLock(base, std::move(*fd));
  }
  return make_error(ErrorCode::kInvalidArgument,
                    "every automatic task uid range (" + range_text(kAutoFirst, kAutoBlocks * static_cast<int>(kAutoStep)) +
                        ", " + std::to_string(kAutoBlocks) + " workers) is in use on this host; give this worker "
                        "--task-uid-base N with a range of its own",
                    {});
}

}  // namespace kbfleet::worker
