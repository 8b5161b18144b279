#pragma once
// Internal to the cgroup layer (cgroup_v1.cpp, cgroup_v2.cpp, cgroup_probe.cpp): file access on
// cgroupfs and the parts of a task cgroup both versions share. Not for use outside sandbox/.
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors/error.hpp"
#include "worker/sandbox/cgroup.hpp"

namespace kbfleet::worker::cgroup_fs {

// SANDBOX_UNAVAILABLE "call(object): strerror", details errno and layer=cgroup.
Error layer_error(std::string_view call, std::string_view object, int err);

// Reads a small file whole (cgroup and /proc files). IO_ERROR naming the path.
[[nodiscard]] Result<std::string> read_file(const std::string& path);
// One write(2) of `value`: a cgroup file takes one value per write and reports a bad value as
// the write's errno (EINVAL, EBUSY, ...). SANDBOX_UNAVAILABLE naming the path.
[[nodiscard]] Status write_file(const std::string& path, std::string_view value);
// write_file for a knob not every kernel or configuration has (memory.swap.max without swap
// accounting, cgroup.kill before 5.14): false if the file does not exist.
[[nodiscard]] Result<bool> write_if_present(const std::string& path, std::string_view value);
bool exists(const std::string& path);
// The value of `key` in a keyed file, or nullopt if the file or key is missing.
std::optional<std::int64_t> read_keyed(const std::string& path, std::string_view key);
// True if `list` (cgroup.controllers, subtree_control: space-separated) names `controller`.
bool lists_controller(std::string_view list, std::string_view controller);

// The directory name of a task cgroup: "kbfleet-<pid namespace inode>-<worker pid>-<name>", so
// workers sharing a parent cgroup (v1 hierarchies often are the root) never collide, and a
// worker can tell the cgroups of dead workers of its own pid namespace (remove_stale). INVALID_ARGUMENT for a name
// outside [A-Za-z0-9._-]+ or starting with '.'.
[[nodiscard]] Result<std::string> task_dir_name(std::string_view name);

// The shared part of a task cgroup: its directories (one per v1 controller, or the v2 one), the
// kill and the removal. The version-specific classes add limits and event counters.
class TaskDirs : public TaskCgroup {
 public:
  // `dirs` are created by make(); `kill_file` is v2's cgroup.kill if the kernel has it.
  TaskDirs(std::vector<std::string> dirs, std::optional<std::string> kill_file);
  ~TaskDirs() override;
  TaskDirs(const TaskDirs&) = delete;
  TaskDirs& operator=(const TaskDirs&) = delete;

  // mkdir each directory (0755). On error the ones already made are removed by the destructor.
  [[nodiscard]] Status make();
  // Takes over directories that exist already (a dead worker's), to kill and remove them.
  void adopt() { made_ = dirs_.size(); }
  const std::vector<std::string>& procs_files() const override { return procs_; }
  bool kill_all() override;

 protected:
  const std::vector<std::string>& dirs() const { return dirs_; }
  void set_kill_file(std::optional<std::string> kill_file) { kill_file_ = std::move(kill_file); }

 private:
  std::vector<std::string> dirs_;
  std::vector<std::string> procs_;
  std::optional<std::string> kill_file_;
  std::size_t made_ = 0;  // dirs_[0, made_) exist and are ours to remove
};

// Removes the task cgroups of workers that are gone (killed with -9 mid-task): the directories
// "kbfleet-<our pid namespace>-<pid>-*" in `parent` whose pid is not a live process. What still
// runs in them is killed first: only a handler's main process has PR_SET_PDEATHSIG, its children
// do not inherit it.
void remove_stale(const std::string& parent);

// Opens the worker's v2 cgroup at `dir` (see probe_cgroups() for the leaf move), or says why not.
[[nodiscard]] Result<std::unique_ptr<Cgroups>> open_v2(const std::string& dir, const CgroupOptions& options);
// Opens the v1 memory and pids hierarchies at the worker's cgroups `dirs` (controller -> dir).
[[nodiscard]] Result<std::unique_ptr<Cgroups>> open_v1(const CgroupDirs& dirs);

}  // namespace kbfleet::worker::cgroup_fs
