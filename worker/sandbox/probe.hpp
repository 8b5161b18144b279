#pragma once
// Which sandbox layers this host can apply, probed once at worker start (in forked children, so
// nothing irreversible touches the worker). The worker logs them, advertises them to the broker
// and refuses tasks whose manifest needs a missing layer unless the operator passed
// --allow-degraded. Layers of this version: process group + kill of the whole group, rlimits,
// environment from scratch, inherited fds closed, and a fresh network namespace for `net: none`.
// User/mount/pid namespaces, Landlock, seccomp and cgroups arrive with issue #4.
#include <string>
#include <vector>

namespace kbfleet::worker {

struct SandboxLayers {
  bool netns = false;  // unshare(CLONE_NEWNET) works here
  std::vector<std::string> active() const;   // e.g. {"pgroup","rlimits","env","fds","netns"}
  std::vector<std::string> missing() const;  // layers of the full design not available here
};

SandboxLayers probe_sandbox();

}  // namespace kbfleet::worker
