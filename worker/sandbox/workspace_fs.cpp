#include "worker/sandbox/workspace_fs.hpp"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>
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

namespace {

void remove_workspace(const std::filesystem::path& dir) {
  unmount_workspace(dir);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// One thread per process, never destroyed (it may still be removing when static destructors
// run at exit; the next start's clean-up takes whatever it left).
class Retirer {
 public:
  static Retirer* get() {
    static Retirer* retirer = [] {
      auto* r = new Retirer;
      try {
        std::thread([r] { r->run(); }).detach();
      } catch (const std::system_error&) {
        r->inline_ = true;
      }
      return r;
    }();
    return retirer;
  }

  void retire(std::filesystem::path dir) {
    if (inline_) return remove_workspace(dir);
    {
      std::lock_guard lock(mu_);
      dirs_.push_back(std::move(dir));
    }
    cv_.notify_one();
  }

 private:
  [[noreturn]] void run() {
    for (;;) {
      std::vector<std::filesystem::path> batch;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return !dirs_.empty(); });
        batch.swap(dirs_);
      }
      for (const auto& dir : batch) remove_workspace(dir);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::filesystem::path> dirs_;
  bool inline_ = false;
};

}  // namespace

void retire_workspace(std::filesystem::path dir) { Retirer::get()->retire(std::move(dir)); }

}  // namespace kbfleet::worker
