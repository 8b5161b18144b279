#include "worker/sandbox/mounts.hpp"

#include <fcntl.h>
#include <sched.h>
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

Result<std::vector<std::string>> anchors_of(const TaskRootSpec& spec) {
  std::vector<fs::path> paths = spec.read_only;
  paths.push_back(spec.workspace);
  std::vector<std::string> anchors;
  for (const auto& raw : paths) {
    if (!raw.is_absolute()) return make_error(ErrorCode::kInvalidArgument, "sandbox path must be absolute: " + raw.string());
    const fs::path p = raw.lexically_normal();
    const fs::path rel = p.relative_path();
    auto it = rel.begin();
    if (it == rel.end()) {
      return make_error(ErrorCode::kInvalidArgument, "cannot bind / into the sandbox root");
    }
    const std::string top = it->string();
    if (top == "tmp" || std::find(std::begin(kSystemPaths), std::end(kSystemPaths), "/" + top) != std::end(kSystemPaths)) {
      continue;
    }
    if (top == "etc" || top == "dev" || top == "proc") {
      return make_error(ErrorCode::kInvalidArgument,
                        "cannot bind " + p.string() + " into the sandbox root: /" + top +
                            " there holds only the host's essential entries; move the plugin or work directory elsewhere");
    }
    anchors.push_back(top);
  }
  std::sort(anchors.begin(), anchors.end());
  anchors.erase(std::unique(anchors.begin(), anchors.end()), anchors.end());
  return anchors;
}

Result<MountPlan> MountPlan::make_template(const TemplateSpec& spec) {
  if (!spec.staging.is_absolute()) {
    return make_error(ErrorCode::kInvalidArgument, "sandbox path must be absolute: " + spec.staging.string());
  }
  MountPlan plan;
  const std::string root = spec.staging.lexically_normal().string();
  auto& s = plan.steps_;
  // Nothing mounted here may propagate back to the host's namespace, nor (below, after the
  // pivot) from a task's copy back into the template.
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
  // Mount points of the task's fresh mounts and scaffolds: empty directories of the read-only
  // root, the same in every task.
  for (const char* dir : {"/tmp", "/proc"}) plan.mkdirs(root, dir);
  for (const auto& anchor : spec.anchors) plan.mkdirs(root, "/" + anchor);
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

  // Enter: pivot_root(".", ".") stacks the old root on the new one; detaching it leaves the
  // host's tree unreachable. Then the root tmpfs and /dev become read-only: every task shares
  // them (the device nodes are binds of their own and stay writable).
  s.push_back({Kind::kChdir, nullptr, plan.keep(root), nullptr, 0, nullptr});
  s.push_back({Kind::kPivot, nullptr, ".", nullptr, 0, nullptr});
  s.push_back({Kind::kChdir, nullptr, "/", nullptr, 0, nullptr});
  s.push_back({Kind::kMount, nullptr, "/dev", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr});
  s.push_back({Kind::kMount, nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | kSafe, nullptr});
  s.push_back({Kind::kMount, nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr});
  return plan;
}

// A clone of the host tree at `host` (taken in the worker's namespace), moved to the same path
// inside the task's root.
Status MountPlan::move_in(const fs::path& host, bool writable) {
  struct stat st {};
  if (::stat(host.c_str(), &st) < 0) return errno_error("stat", host.string(), errno);
  if (!S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "sandbox bind must be a directory: " + host.string());
  KB_CHECK(trees_ < kMaxTrees);
  const int tree = trees_++;
  const char* path = keep(host.string());
  unsigned long attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (writable ? 0 : MOUNT_ATTR_RDONLY);
  steps_.insert(steps_.begin(), {Kind::kOpenTree, path, nullptr, nullptr, attr, nullptr, tree});
  mkdirs("", host);
  steps_.push_back({Kind::kMoveTree, nullptr, path, nullptr, 0, nullptr, tree});
  exposed_.push_back({host, writable, true});
  return {};
}

Result<MountPlan> MountPlan::make_task(const TaskRootSpec& spec) {
  auto anchors = anchors_of(spec);
  if (!anchors) return tl::unexpected(anchors.error());
  if (spec.read_only.size() + 1 > kMaxTrees) {
    return make_error(ErrorCode::kInvalidArgument, "too many read-only binds for the sandbox root");
  }
  MountPlan plan;
  auto& s = plan.steps_;
  // Into the template (it resets root and cwd to the template's root), then a private copy of
  // it, so everything below dies with the task. The copy's mounts are private (the template's
  // are): nothing propagates back.
  s.push_back({Kind::kEnter, nullptr, "the slot's root template", nullptr, 0, nullptr});
  std::string tmp_opts = "mode=1777,size=" + std::to_string(std::max<std::int64_t>(spec.tmp_mb, 1)) + "m";
  s.push_back({Kind::kMount, "tmpfs", "/tmp", "tmpfs", kSafe, plan.keep(tmp_opts)});
  s.push_back({Kind::kMount, "proc", "/proc", "proc", kSafe | MS_NOEXEC, nullptr});
  s.push_back({Kind::kMount, "tmpfs", "/dev/shm", "tmpfs", kSafe | MS_NOEXEC, "mode=1777,size=16m"});
  for (const auto& anchor : *anchors) {
    s.push_back({Kind::kMount, "kbfleet-scaffold", plan.keep("/" + anchor), "tmpfs", kSafe | MS_NOEXEC, "mode=0755,size=64k"});
  }
  // Last, so that a plugin or workspace under /tmp lands inside the fresh /tmp, not under it.
  for (const auto& ro : spec.read_only) {
    if (auto st = plan.move_in(ro.lexically_normal(), false); !st) return tl::unexpected(st.error());
  }
  if (auto st = plan.move_in(spec.workspace.lexically_normal(), true); !st) return tl::unexpected(st.error());
  // The scaffolds only hold mount points: read-only once those exist.
  for (const auto& anchor : *anchors) {
    s.push_back({Kind::kMount, nullptr, plan.keep("/" + anchor), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | kSafe | MS_NOEXEC, nullptr});
  }
  s.push_back({Kind::kChdir, nullptr, plan.keep(spec.workspace.lexically_normal().string()), nullptr, 0, nullptr});
  return plan;
}

int MountPlan::apply(int template_fd, int* failed) const noexcept {
  int trees[kMaxTrees] = {-1, -1};
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
      case Kind::kOpenTree: {
        // A detached copy of the host tree (open_tree(2)), flagged before it is attached.
        int fd = ::open_tree(AT_FDCWD, st.source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        if (fd < 0) {
          rc = -1;
          break;
        }
        trees[st.tree] = fd;
        mount_attr attr{};
        attr.attr_set = st.flags;
        rc = static_cast<int>(::mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr));
        break;
      }
      case Kind::kEnter:
        rc = ::setns(template_fd, CLONE_NEWNS);
        if (rc == 0) rc = ::unshare(CLONE_NEWNS);
        break;
      case Kind::kMoveTree:
        rc = ::move_mount(trees[st.tree], "", AT_FDCWD, st.target, MOVE_MOUNT_F_EMPTY_PATH);
        if (rc == 0) {
          ::close(trees[st.tree]);
          trees[st.tree] = -1;
        }
        break;
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
    case Kind::kOpenTree: return "open_tree(" + str(st.source) + ")";
    case Kind::kEnter: return "setns+unshare(CLONE_NEWNS) from " + str(st.target);
    case Kind::kMoveTree: return "move_mount(" + str(st.target) + ")";
  }
  return "mount step";
}

}  // namespace kbfleet::worker
