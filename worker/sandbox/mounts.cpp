#include "worker/sandbox/mounts.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;

// Host directories (or their merged-/usr symlinks) every handler gets read-only.
constexpr const char* kSystemPaths[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
// /etc essentials: user and host names, the dynamic loader's cache, time zone, TLS roots and
// Debian's alternatives (awk, editor...). Not /etc as a whole: it holds the host's secrets.
constexpr const char* kEtcEntries[] = {
    "passwd", "group", "hosts", "host.conf", "nsswitch.conf", "services", "protocols", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "alternatives", "ssl", "ca-certificates",
    "os-release", "debian_version", "mime.types", "profile", "bash.bashrc", "inputrc", "locale.alias"};
constexpr const char* kDevNodes[] = {"null", "zero", "full", "random", "urandom"};
constexpr const char* kDevLinks[][2] = {
    {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};

constexpr unsigned long kSafe = MS_NOSUID | MS_NODEV;

int pivot_root(const char* new_root, const char* put_old) {
  return static_cast<int>(::syscall(SYS_pivot_root, new_root, put_old));
}

}  // namespace

const char* MountPlan::keep(std::string s) {
  strings_->push_back(std::move(s));
  return strings_->back().c_str();
}

// mkdir -p of `inside` (absolute, inside the new root), parents first, each at most once.
void MountPlan::mkdirs(const std::string& root, const fs::path& inside) {
  fs::path partial;
  for (const auto& part : inside.relative_path()) {
    partial /= part;
    std::string target = root + "/" + partial.string();
    if (std::find(made_dirs_.begin(), made_dirs_.end(), target) != made_dirs_.end()) continue;
    made_dirs_.push_back(target);
    steps_.push_back({Kind::kMkdir, nullptr, keep(target), nullptr, 0755, nullptr});
  }
}

void MountPlan::bind(const std::string& root, const fs::path& host, bool writable, bool is_dir) {
  std::string target = root + host.string();
  if (is_dir) {
    mkdirs(root, host);
  } else {
    mkdirs(root, host.parent_path());
    steps_.push_back({Kind::kTouch, nullptr, keep(target), nullptr, 0, nullptr});
  }
  const char* t = keep(target);
  steps_.push_back({Kind::kMount, keep(host.string()), t, nullptr, MS_BIND | MS_REC, nullptr});
  // A bind mount takes its flags from a remount of itself.
  unsigned long flags = MS_BIND | MS_REMOUNT | kSafe | (writable ? 0 : MS_RDONLY);
  steps_.push_back({Kind::kMount, nullptr, t, nullptr, flags, nullptr});
}

// One host path at the same place inside the root: a symlink is recreated as the same symlink
// (merged /usr: /bin -> usr/bin), a directory or file is bound.
Status MountPlan::expose_host(const std::string& root, const fs::path& host, bool writable, bool executable) {
  struct stat st {};
  if (::lstat(host.c_str(), &st) < 0) return errno_error("lstat", host.string(), errno);
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    fs::path to = fs::read_symlink(host, ec);
    if (ec) return make_error(ErrorCode::kIoError, "readlink " + host.string() + ": " + ec.message());
    mkdirs(root, host.parent_path());
    steps_.push_back({Kind::kSymlink, keep(to.string()), keep(root + host.string()), nullptr, 0, nullptr});
    return {};
  }
  bind(root, host, writable, S_ISDIR(st.st_mode));
  exposed_.push_back({host, writable, executable});
  return {};
}

Result<MountPlan> MountPlan::make(const RootSpec& spec) {
  for (const auto* p : {&spec.staging, &spec.workspace}) {
    if (!p->is_absolute()) return make_error(ErrorCode::kInvalidArgument, "sandbox path must be absolute: " + p->string());
  }
  MountPlan plan;
  const std::string root = spec.staging.lexically_normal().string();
  auto& s = plan.steps_;
  // Nothing we mount may propagate back to the host's namespace.
  s.push_back({Kind::kMount, nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr});
  s.push_back({Kind::kMount, "kbfleet-root", plan.keep(root), "tmpfs", kSafe, "mode=0755,size=1m"});

  for (const char* sys : kSystemPaths) {
    struct stat st {};
    if (::lstat(sys, &st) < 0) continue;  // absent on this distribution
    if (auto st = plan.expose_host(root, sys, false, true); !st) return tl::unexpected(st.error());
  }
  plan.mkdirs(root, "/etc");
  for (const char* entry : kEtcEntries) {
    fs::path host = fs::path("/etc") / entry;
    struct stat st {};
    if (::lstat(host.c_str(), &st) < 0) continue;
    if (auto r = plan.expose_host(root, host, false, false); !r) return tl::unexpected(r.error());
  }
  plan.mkdirs(root, "/tmp");
  std::string tmp_opts = "mode=1777,size=" + std::to_string(std::max<std::int64_t>(spec.tmp_mb, 1)) + "m";
  s.push_back({Kind::kMount, "tmpfs", plan.keep(root + "/tmp"), "tmpfs", kSafe, plan.keep(tmp_opts)});
  plan.mkdirs(root, "/proc");
  s.push_back({Kind::kMount, "proc", plan.keep(root + "/proc"), "proc", kSafe | MS_NOEXEC, nullptr});
  plan.mkdirs(root, "/dev");
  s.push_back({Kind::kMount, "tmpfs", plan.keep(root + "/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k"});
  for (const char* node : kDevNodes) {
    fs::path host = fs::path("/dev") / node;
    struct stat st {};
    if (::stat(host.c_str(), &st) < 0 || !S_ISCHR(st.st_mode)) continue;
    s.push_back({Kind::kTouch, nullptr, plan.keep(root + host.string()), nullptr, 0, nullptr});
    s.push_back({Kind::kMount, plan.keep(host.string()), plan.keep(root + host.string()), nullptr, MS_BIND, nullptr});
    plan.exposed_.push_back({host, true, false});
  }
  for (const auto& link : kDevLinks) {
    s.push_back({Kind::kSymlink, link[0], plan.keep(root + "/dev/" + link[1]), nullptr, 0, nullptr});
  }
  plan.mkdirs(root, "/dev/shm");
  s.push_back({Kind::kMount, "tmpfs", plan.keep(root + "/dev/shm"), "tmpfs", kSafe | MS_NOEXEC, "mode=1777,size=16m"});

  // Last, so that a plugin or workspace under /tmp lands inside the fresh /tmp, not under it.
  for (const auto& ro : spec.read_only) {
    if (!ro.is_absolute()) return make_error(ErrorCode::kInvalidArgument, "sandbox path must be absolute: " + ro.string());
    if (auto r = plan.expose_host(root, ro.lexically_normal(), false, true); !r) return tl::unexpected(r.error());
  }
  if (auto r = plan.expose_host(root, spec.workspace.lexically_normal(), true, true); !r) return tl::unexpected(r.error());


  // Enter: pivot_root(".", ".") stacks the old root on the new one; detaching it leaves the
  // host's tree unreachable. Then the root tmpfs itself becomes read-only.
  s.push_back({Kind::kChdir, nullptr, plan.keep(root), nullptr, 0, nullptr});
  s.push_back({Kind::kPivot, nullptr, ".", nullptr, 0, nullptr});
  s.push_back({Kind::kChdir, nullptr, "/", nullptr, 0, nullptr});
  s.push_back({Kind::kMount, nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | kSafe, nullptr});
  s.push_back({Kind::kChdir, nullptr, plan.keep(spec.workspace.lexically_normal().string()), nullptr, 0, nullptr});
  return plan;
}

int MountPlan::apply(int* failed) const noexcept {
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    const Step& st = steps_[i];
    int rc = 0;
    switch (st.kind) {
      case Kind::kMount: rc = ::mount(st.source, st.target, st.fstype, st.flags, st.data); break;
      case Kind::kMkdir:
        rc = ::mkdir(st.target, static_cast<mode_t>(st.flags));
        if (rc < 0 && errno == EEXIST) rc = 0;
        break;
      case Kind::kTouch: {
        int fd = ::open(st.target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        rc = fd < 0 ? -1 : ::close(fd);
        break;
      }
      case Kind::kSymlink: rc = ::symlink(st.source, st.target); break;
      case Kind::kPivot:
        rc = pivot_root(".", ".");
        if (rc == 0) rc = ::umount2(".", MNT_DETACH);
        break;
      case Kind::kChdir: rc = ::chdir(st.target); break;
    }
    if (rc < 0) {
      *failed = static_cast<int>(i);
      return -1;
    }
  }
  return 0;
}

std::string MountPlan::describe(int index) const {
  if (index < 0 || static_cast<std::size_t>(index) >= steps_.size()) return "mount step " + std::to_string(index);
  const Step& st = steps_[static_cast<std::size_t>(index)];
  auto str = [](const char* p) { return std::string(p != nullptr ? p : "none"); };
  switch (st.kind) {
    case Kind::kMount: return "mount(" + str(st.source != nullptr ? st.source : st.fstype) + ", " + str(st.target) + ")";
    case Kind::kMkdir: return "mkdir(" + str(st.target) + ")";
    case Kind::kTouch: return "create mount point " + str(st.target);
    case Kind::kSymlink: return "symlink(" + str(st.source) + ", " + str(st.target) + ")";
    case Kind::kPivot: return "pivot_root(new root)";
    case Kind::kChdir: return "chdir(" + str(st.target) + ")";
  }
  return "mount step";
}

}  // namespace kbfleet::worker
