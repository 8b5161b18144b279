#pragma once
// Isolation: the sandbox layers the launcher applies to one task, prepared in the worker before
// the spawn (worker/task/prepare.cpp) and applied by the child between clone() and exec. Any part
// may be absent (a layer the host lacks and the operator let the worker degrade without); a null
// LaunchSpec::isolation is a plain process (`sandbox: none`).
//
// Order in the child (launch.cpp): join the cgroup -> new net namespace -> a private copy of the
// worker's root template with the task's own mounts (mounts.hpp, root_template.hpp) -> hostname -> setns into the slot's user namespace, drop supplementary
// groups, become uid/gid 1000 there (identity.hpp) -> drop every capability -> no_new_privs ->
// Landlock -> seccomp -> exec kbfleet-init, which runs the handler as its child (init/).
#include <linux/filter.h>

#include <filesystem>
#include <memory>
#include <string>
#include <optional>
#include <vector>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"
#include "worker/sandbox/identity.hpp"
#include "worker/sandbox/mounts.hpp"
#include "worker/sandbox/probe.hpp"
#include "worker/sandbox/root_template.hpp"

namespace kbfleet::worker {

struct Isolation {
  // New pid, IPC and UTS namespaces and a copy of `root_template` completed by `root` (the task's
  // part, mounts.hpp); the child is pid 1 and execs init.
  std::optional<MountPlan> root;
  std::shared_ptr<const RootTemplate> root_template;  // set with `root`
  int init_exe = -1;                       // O_PATH fd of kbfleet-init (owned by the worker)
  std::optional<SlotIdentity> identity;    // needs `root`
  bool drop_capabilities = false;
  posix::Fd landlock;                      // a ruleset fd to restrict the child with, or empty
  std::uint64_t landlock_fresh_write = 0;  // access mask for the fresh writable mounts (root only)
  std::uint64_t landlock_fresh_read = 0;   // ... and for the fresh readable ones (/proc)
  const sock_fprog* seccomp = nullptr;     // owned by the worker's SeccompFilter
  int netns_fd = -1;  // the slot's allow-list network (net_slots.hpp, borrowed); -1: its empty one
};

struct IsolationRequest {
  std::filesystem::path staging;      // the worker's empty dir the root template is mounted on
  std::filesystem::path plugin_root;  // bound read-only (canonicalized here)
  std::filesystem::path workspace;    // must exist; handed to the slot's task user
  std::vector<std::string> fs_read, fs_write;  // permissions.fs globs (Landlock)
  int slot = 0;
  std::int64_t tmp_mb = 64;
  int netns_fd = -1;  // SlotNetworks::prepare()'s fd for a `net: {allow}` task, else -1
};

// Everything `have` offers, for one task: the root, the slot identity (the workspace and its
// out/ are chowned to it, mode 0700), the capability drop, a Landlock ruleset and the seccomp
// program. Layers `have` lacks are left out (the caller decided whether that is acceptable).
// Errors: SANDBOX_UNAVAILABLE or IO_ERROR naming the step.
[[nodiscard]] Result<std::shared_ptr<const Isolation>> make_isolation(const SandboxLayers& have,
                                                                      const IsolationRequest& request);

}  // namespace kbfleet::worker
