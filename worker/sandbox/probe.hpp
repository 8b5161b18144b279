#pragma once
// Which sandbox layers this host can apply, probed once at worker start. The worker logs them,
// advertises them to the broker and refuses tasks whose manifest needs a missing layer unless the
// operator passed --allow-degraded. Layers of this version: process group + kill of the whole
// group, rlimits, environment from scratch, inherited fds closed, a fresh network namespace for
// `net: none`, and cgroup quotas (memory, pids) with a kill of the whole cgroup.
// User/mount/pid namespaces, Landlock and seccomp arrive with issue #4.
//
// The network probe runs in a forked child, so nothing irreversible touches the worker. The cgroup
// probe may move the worker into a leaf cgroup on cgroup v2 (see probe_cgroups() in cgroup.hpp):
// call probe_sandbox() before starting threads.
#include <memory>
#include <string>
#include <vector>

#include "worker/sandbox/cgroup.hpp"

namespace kbfleet::worker {

struct SandboxLayers {
  bool netns = false;  // unshare(CLONE_NEWNET) works here
  // Creates the task cgroups; null when the cgroup layer is unavailable (then memory falls back
  // to RLIMIT_AS and pids is not enforced). Shared and immutable, so SandboxLayers stays a value.
  std::shared_ptr<const Cgroups> cgroups;
  std::string cgroup_unavailable;  // why cgroups is null, for the start-up log and --check-sandbox

  std::vector<std::string> active() const;   // e.g. {"pgroup","rlimits","env","fds","netns","cgroup"}
  std::vector<std::string> missing() const;  // layers of the full design not available here
};

SandboxLayers probe_sandbox();

}  // namespace kbfleet::worker
