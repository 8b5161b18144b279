#pragma once
// The minimal root a sandboxed task sees: read-only /usr, /bin, /sbin, /lib*, a few essential
// /etc files, the plugin root read-only and the workspace read-write at their host paths, a
// private /tmp and /dev/shm, a fresh /proc (of the task's pid namespace) and a read-only /dev with
// null, zero, full, random and urandom. Nothing else of the host exists in it, so there is no
// other task's workspace, no secret and no socket to reach by path. Every mount is nosuid,nodev
// (except the device nodes).
//
// It is built in two parts, because building all of it per task cost milliseconds (each mount in
// a copy of the worker's whole mount table, and the detach of that copy's old root, which waits
// for an RCU grace period; docs/performance.md#sandbox-spawn):
//  - the template (MountPlan::make_template, applied once per worker by root_template.cpp in a
//    mount namespace of its own): everything that is the same for every task, read-only;
//  - the task's part (MountPlan::make_task, applied in the launched child): open_tree clones of
//    the plugin root and the workspace, taken while the child is still in the worker's namespace;
//    setns into the template and unshare a private copy of it (a few dozen mounts, not the host's
//    table); a fresh /tmp, /dev/shm and /proc; a fresh "scaffold" tmpfs on each top-level
//    directory the plugin root or workspace lives under (mount points exist in no other task);
//    the two clones moved in; chdir into the workspace. The copy dies with the task.
//
// MountPlan::make_*() run in the worker: they inspect the host paths and spell out every step as
// C strings. MountPlan::apply() runs in a child (shared memory after clone, or a forked helper):
// syscalls only, no allocation.
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "worker/sandbox/landlock.hpp"

namespace kbfleet::worker {

struct TemplateSpec {
  std::filesystem::path staging;   // an empty directory to mount the template's root on
  std::vector<std::string> anchors;  // top-level directories to leave a mount point for (anchors_of)
};

struct TaskRootSpec {
  std::vector<std::filesystem::path> read_only;  // bound read-only at the same path (plugin root)
  std::filesystem::path workspace;               // bound read-write at the same path; the cwd
  std::int64_t tmp_mb = 64;                      // size of /tmp (counts towards the task's memory)
};

// The host paths the new root exposes, with whether each is writable: what the Landlock ruleset
// must cover (rules attach to these inodes, which the bind mounts share).
struct ExposedPath {
  std::filesystem::path host;
  bool writable;
  bool executable;

  // The Landlock rule for it: what its mount allows.
  FsRule landlock_rule() const {
    return {host, writable ? FsAccess::kReadWrite : executable ? FsAccess::kReadExec : FsAccess::kRead};
  }
};

// The top-level directories (e.g. "var" for /var/lib/kbfleet/work/t1) the task's paths need a
// scaffold on: not "tmp" (they land inside the fresh /tmp) nor a bound system directory (the
// host's own directories are the mount points there). Sorted, unique. INVALID_ARGUMENT for a
// relative path or one under /etc, /dev or /proc, whose template directories hold host entries.
[[nodiscard]] Result<std::vector<std::string>> anchors_of(const TaskRootSpec& spec);

class MountPlan {
 public:
  // The template. INVALID_ARGUMENT for a relative staging path; IO_ERROR if a host path cannot
  // be inspected. apply() builds it in the caller's (fresh) mount namespace and pivots into it.
  [[nodiscard]] static Result<MountPlan> make_template(const TemplateSpec& spec);
  // The task's part. INVALID_ARGUMENT as anchors_of(); IO_ERROR if a bound path cannot be
  // inspected. apply() expects `template_fd` to be the template's mount namespace.
  [[nodiscard]] static Result<MountPlan> make_task(const TaskRootSpec& spec);

  // Child side: runs the steps. 0, or -1 with errno set and *failed = the index of the failed
  // step. `template_fd` is only used by a task plan.
  int apply(int template_fd, int* failed) const noexcept;
  // "mount(tmpfs, /tmp)" for a step index, for the error message.
  std::string describe(int index) const;

  const std::vector<ExposedPath>& exposed() const { return exposed_; }
  // Paths, inside the new root, of the fresh mounts (tmpfs /tmp, /dev/shm; /proc): their inodes
  // only exist in the child, so the child adds their Landlock rules itself.
  static constexpr const char* kFreshWritable[] = {"/tmp", "/dev/shm"};
  static constexpr const char* kFreshReadable[] = {"/proc"};

 private:
  enum class Kind { kMount, kMkdir, kTouch, kSymlink, kPivot, kChdir, kOpenTree, kEnter, kMoveTree };
  struct Step {
    Kind kind;
    const char* source;
    const char* target;
    const char* fstype;
    unsigned long flags;  // mount flags; mkdir mode; kOpenTree: MOUNT_ATTR_* to set
    const char* data;
    int tree = 0;  // kOpenTree, kMoveTree: which of the task's detached trees
  };
  static constexpr int kMaxTrees = 2;
  const char* keep(std::string s);
  void mkdirs(const std::string& root, const std::filesystem::path& inside);
  void bind(const std::string& root, const std::filesystem::path& host, bool writable, bool is_dir);
  Status expose_host(const std::string& root, const std::filesystem::path& host, bool writable,
                     bool executable);
  Status move_in(const std::filesystem::path& host, bool writable);

  std::unique_ptr<std::deque<std::string>> strings_ = std::make_unique<std::deque<std::string>>();
  std::vector<Step> steps_;
  std::vector<std::string> made_dirs_;
  std::vector<ExposedPath> exposed_;
  int trees_ = 0;
};

}  // namespace kbfleet::worker
