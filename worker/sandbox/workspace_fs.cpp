#include "worker/sandbox/workspace_fs.hpp"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSparePrefix = ".spare-";
// Spares kept per parent directory. The directories of a worker circulate: in use, being
// retired (a detach waits for an RCU grace period, tens of milliseconds when the host is loaded),
// spare. A cap below the retirement backlog's peaks made the loop mkdir new directories in a
// backlog and the retirers rmdir as many once it cleared, over and over: about half the tasks of a
// busy one-slot worker paid an ext4 mkdir (~1 ms, slower after many recent rmdirs) in the loop
// (docs/performance.md, end to end). Empty directories cost an inode each.
constexpr std::size_t kMaxSpares = 256;

// An empty real directory (not a symlink) of ours with the mode create_workspace() gave it:
// what a tmpfs workspace's mount point is once the tmpfs is detached. `fresh_mode` 0: not known.
bool reusable(const fs::path& dir, unsigned fresh_mode) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) return false;
  if (fresh_mode == 0 || (st.st_mode & 07777) != fresh_mode) return false;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool empty = true;
  while (const dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  return empty;
}

// Threads retiring workspaces side by side. Each detach waits for an RCU grace period
// (milliseconds on a loaded VM) while using no CPU; with one thread, workspaces of short tasks
// waited in line behind each other's detach, the spares ran out and the worker's loop made its
// workspace directories itself (mkdir on ext4: ~1 ms). Concurrent waits share grace periods.
constexpr int kRetirerThreads = 4;

// A few threads per process, never destroyed (they may still be removing when static destructors
// run at exit; the next start's clean-up takes whatever they left). They also keep the spares.
class Retirer {
 public:
  static Retirer* get() {
    static Retirer* retirer = [] {
      auto* r = new Retirer;
      for (int i = 0; i < kRetirerThreads; ++i) {
        try {
          std::thread([r] { r->run(); }).detach();
          r->threads_ = true;
        } catch (const std::system_error&) {
          break;  // fewer threads, or inline without any
        }
      }
      r->inline_ = !r->threads_;
      return r;
    }();
    return retirer;
  }

  void retire(fs::path dir) {
    if (inline_) return remove(dir);
    {
      std::lock_guard lock(mu_);
      dirs_.push_back(std::move(dir));
    }
    cv_.notify_one();
  }

  void wait_idle() {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [this] { return inline_ || (dirs_.empty() && busy_ == 0); });
  }

  // The mode of a new workspace directory (umask applied), learnt from the first one; a spare
  // must still have it.
  std::atomic<unsigned> fresh_mode{0};

  // A spare directory of `parent`, or empty if none is ready.
  fs::path take_spare(const fs::path& parent) {
    std::lock_guard lock(mu_);
    auto it = spares_.find(parent);
    if (it == spares_.end() || it->second.empty()) return {};
    fs::path spare = std::move(it->second.back());
    it->second.pop_back();
    return spare;
  }

 private:
  [[noreturn]] void run() {
    // Yield the CPU to the worker's loop and its spawns (setpriority(2): this thread only).
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
    for (;;) {
      fs::path dir;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return !dirs_.empty(); });
        dir = std::move(dirs_.front());
        dirs_.pop_front();
        ++busy_;
      }
      remove(dir);
      std::lock_guard lock(mu_);
      --busy_;
      idle_.notify_all();
    }
  }

  void remove(const fs::path& dir) {
    unmount_workspace(dir);
    if (keep_as_spare(dir)) return;
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  bool keep_as_spare(const fs::path& dir) {
    const fs::path parent = dir.parent_path();
    {
      std::lock_guard lock(mu_);
      if (spares_[parent].size() >= kMaxSpares) return false;
    }
    if (!reusable(dir, fresh_mode.load())) return false;
    fs::path spare = parent / (std::string(kSparePrefix) + std::to_string(next_++));
    if (::rename(dir.c_str(), spare.c_str()) != 0) return false;
    std::lock_guard lock(mu_);
    spares_[parent].push_back(std::move(spare));
    return true;
  }

  std::mutex mu_;
  std::condition_variable cv_, idle_;
  std::deque<fs::path> dirs_;
  int busy_ = 0;  // threads removing a directory taken from dirs_
  std::map<fs::path, std::vector<fs::path>> spares_;  // by parent directory
  std::atomic<std::uint64_t> next_{0};                // names spares uniquely across the threads
  bool threads_ = false;
  bool inline_ = false;
};

}  // namespace

Status create_workspace(const fs::path& dir) {
  struct stat existing {};
  if (::lstat(dir.c_str(), &existing) == 0 && S_ISDIR(existing.st_mode)) return {};  // as mkdir -p
  for (fs::path spare; !(spare = Retirer::get()->take_spare(dir.parent_path())).empty();) {
    if (::rename(spare.c_str(), dir.c_str()) == 0) return {};
    // ENOENT: the worker's clean-up removed it; try the next. Else `dir` is in the way, and
    // mkdir below reports why.
    if (errno != ENOENT) {
      ::rmdir(spare.c_str());
      break;
    }
  }
  if (::mkdir(dir.c_str(), 0777) < 0) return errno_error("mkdir", dir.string(), errno);
  if (Retirer::get()->fresh_mode.load() == 0) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0) Retirer::get()->fresh_mode = st.st_mode & 07777;
  }
  return {};
}

Status mount_workspace(const fs::path& dir, std::int64_t size_mb) {
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

void unmount_workspace(const fs::path& dir) { ::umount2(dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW); }

void retire_workspace(fs::path dir) { Retirer::get()->retire(std::move(dir)); }

void wait_workspaces_retired() { Retirer::get()->wait_idle(); }

bool is_spare_workspace_name(std::string_view name) {
  return name.size() > kSparePrefix.size() && name.substr(0, kSparePrefix.size()) == kSparePrefix;
}

}  // namespace kbfleet::worker
