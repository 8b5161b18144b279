#pragma once
// Which sandbox layers this host can apply, probed once at worker start. The worker logs them,
// prints them with --check-sandbox, advertises them to the broker and refuses tasks that need a
// missing one unless the operator passed --allow-degraded (worker/task/prepare.cpp).
//
// Layers: pgroup, rlimits, env, fds (always); netns (`net: none`); mntns, pidns, ipcns, utsns
// (a new root and kbfleet-init as pid 1: need a root worker and kbfleet-init); userns (a host uid
// per slot, identity.hpp: root worker); caps (every capability dropped: root worker; a non-root
// worker has none to drop); landlock; seccomp; cgroup (memory and pids quotas); netallow (only
// with --task-net: net allow-lists enforced with nftables in a per-slot namespace, net_slots.hpp).
//
// The namespace probes run in forked children, so nothing irreversible touches the worker. The
// cgroup probe may move the worker into a leaf cgroup on cgroup v2 (see probe_cgroups() in
// cgroup.hpp): call probe_sandbox() before starting threads.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/posix/fd.hpp"
#include "worker/sandbox/cgroup.hpp"
#include "worker/sandbox/identity.hpp"
#include "worker/sandbox/net_slots.hpp"
#include "worker/sandbox/root_template.hpp"
#include "worker/sandbox/seccomp.hpp"

namespace kbfleet::worker {

struct ProbeOptions {
  std::filesystem::path init;    // kbfleet-init; empty = next to the running executable
  std::uint32_t uid_base = 200000;  // first host uid/gid of the task users (slot 0)
  int slots = 1;                 // slot user namespaces made at start
  std::string task_net;          // --task-net CIDR: per-slot networks for net allow-lists; empty = off
  bool cpu_bandwidth = false;    // --task-cpus: task cgroups must take a CPU quota
};

struct SandboxLayers {
  bool netns = false;       // unshare(CLONE_NEWNET) works here
  bool namespaces = false;  // mnt+pid+ipc+uts namespaces and kbfleet-init
  std::shared_ptr<posix::Fd> init_exe;              // O_PATH fd of kbfleet-init, with namespaces
  std::shared_ptr<RootTemplates> root_templates;    // the tasks' root templates, with namespaces
  std::shared_ptr<SlotIdentities> identities;       // userns; null when unavailable
  bool drop_capabilities = false;                   // caps: the worker has some to drop
  int landlock_abi = 0;                             // 0: no Landlock
  std::shared_ptr<const SeccompFilter> seccomp;     // null: no seccomp
  // Creates the task cgroups (a pool, cgroup_pool.hpp); null when the cgroup layer is
  // unavailable (then memory falls back to RLIMIT_AS and pids is not enforced).
  std::shared_ptr<const Cgroups> cgroups;
  // netallow: per-slot networks where a task's `net: {allow}` list is enforced (--task-net); null
  // when off or unavailable. Not part of missing(): only plugins with an allow-list need it.
  std::shared_ptr<SlotNetworks> networks;
  std::map<std::string, std::string> reasons;       // layer -> why it is unavailable

  std::vector<std::string> active() const;   // e.g. {"pgroup","rlimits",...,"seccomp","cgroup"}
  std::vector<std::string> missing() const;  // layers of the full design not available here
};

// Every isolating layer a `sandbox: process` task needs (netns only for `net: none`).
const std::vector<std::string>& isolation_layers();

SandboxLayers probe_sandbox(const ProbeOptions& options = {});

}  // namespace kbfleet::worker
