#pragma once
// The minimal root a sandboxed task sees, built inside its new mount namespace and entered with
// pivot_root: read-only /usr, /bin, /sbin, /lib*, a few essential /etc files, the plugin root
// read-only and the workspace read-write at their host paths, a private /tmp and /dev/shm, a
// fresh /proc (of the task's pid namespace) and a /dev with null, zero, full, random and urandom.
// Nothing else of the host exists in it, so there is no other task's workspace, no secret and no
// socket to reach by path. Every mount is nosuid,nodev (except the device nodes).
//
// MountPlan::make() runs in the worker: it inspects the host paths and spells out every
// mkdir/mount/symlink as C strings. MountPlan::apply() runs in the launched child (shared memory,
// after clone): syscalls only, no allocation.
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

struct RootSpec {
  std::filesystem::path staging;                     // an empty directory to mount the new root on
  std::vector<std::filesystem::path> read_only;      // bound read-only at the same path (plugin root)
  std::filesystem::path workspace;                   // bound read-write at the same path; the cwd
  std::int64_t tmp_mb = 64;                          // size of /tmp (counts towards the task's memory)
};

// The host paths the new root exposes, with whether each is writable: what the Landlock ruleset
// must cover (rules attach to these inodes, which the bind mounts share).
struct ExposedPath {
  std::filesystem::path host;
  bool writable;
  bool executable;
};

class MountPlan {
 public:
  // INVALID_ARGUMENT for a relative path; IO_ERROR if a required host path (workspace, a
  // read-only bind) cannot be inspected.
  [[nodiscard]] static Result<MountPlan> make(const RootSpec& spec);

  // Child side. Builds the root, pivots into it, detaches the host's root and enters the
  // workspace. 0, or -1 with errno set and *failed = the index of the failed step.
  int apply(int* failed) const noexcept;
  // "mount(tmpfs, /tmp)" for a step index, for the error message.
  std::string describe(int index) const;

  const std::vector<ExposedPath>& exposed() const { return exposed_; }
  // Paths, inside the new root, of the fresh mounts (tmpfs /tmp, /dev/shm; /proc): their inodes
  // only exist in the child, so the child adds their Landlock rules itself.
  static constexpr const char* kFreshWritable[] = {"/tmp", "/dev/shm"};
  static constexpr const char* kFreshReadable[] = {"/proc"};

 private:
  enum class Kind { kMount, kMkdir, kTouch, kSymlink, kPivot, kChdir };
  struct Step {
    Kind kind;
    const char* source;
    const char* target;
    const char* fstype;
    unsigned long flags;
    const char* data;
  };
  const char* keep(std::string s);
  void mkdirs(const std::string& root, const std::filesystem::path& inside);
  void bind(const std::string& root, const std::filesystem::path& host, bool writable, bool is_dir);
  Status expose_host(const std::string& root, const std::filesystem::path& host, bool writable,
                     bool executable);

  std::unique_ptr<std::deque<std::string>> strings_ = std::make_unique<std::deque<std::string>>();
  std::vector<Step> steps_;
  std::vector<std::string> made_dirs_;
  std::vector<ExposedPath> exposed_;
};

}  // namespace kbfleet::worker
