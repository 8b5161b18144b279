#include "worker/sandbox/workspace_fs.hpp"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <string>

namespace kbfleet::worker {

Status mount_workspace(const std::filesystem::path& dir, std::int64_t size_mb) {
  std::string opts = "mode=0700,size=" + std::to_string(size_mb) + "m";
  if (::mount("kbfleet-workspace", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) < 0) {
    auto e = errno_error("mount(tmpfs " + opts + ")", dir.string(), errno);
    e.value().code = ErrorCode::kSandboxUnavailable;
    e.value().details["step"] = "disk";
    return tl::unexpected(e.value());
  }
  if (::mkdir((dir / "out").c_str(), 0755) < 0) {
    int err = errno;
    unmount_workspace(dir);
    return errno_error("mkdir", (dir / "out").string(), err);
  }
  return {};
}

void unmount_workspace(const std::filesystem::path& dir) { ::umount2(dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW); }

}  // namespace kbfleet::worker
