#pragma once
// RootTemplate: the part of every task's root that is the same for all tasks (mounts.hpp), built
// once in a mount namespace of its own and kept alive by an fd to that namespace. A task's child
// enters it with setns and unshares a private copy, so a spawn costs a copy of a few dozen
// mounts instead of a copy of the worker's whole mount table, ~30 new mounts and the detach of
// the old root (docs/performance.md#sandbox-spawn).
//
// RootTemplates caches one template per set of anchors (mounts.hpp anchors_of: the top-level
// directories plugin roots and workspaces live under, fixed for a worker in practice), and
// builds it again when a bound host path was replaced (RootTemplate::current()). Not
// thread-safe beyond its mutex: get() may be called from any thread.
#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"
#include "worker/sandbox/landlock.hpp"
#include "worker/sandbox/mounts.hpp"
#include "worker/sandbox/path_identities.hpp"

namespace kbfleet::worker {

class RootTemplate {
 public:
  // Builds the template in a forked helper (it makes the namespace, mounts, pivots, and exits
  // once the worker holds the namespace's fd). Errors: SANDBOX_UNAVAILABLE (details.step
  // "mntns") naming the step that failed; IO_ERROR for a fork or pipe failure.
  [[nodiscard]] static Result<std::shared_ptr<const RootTemplate>> build(const TemplateSpec& spec);

  int ns_fd() const { return ns_.get(); }  // the template's mount namespace (O_RDONLY|O_CLOEXEC)
  const std::vector<ExposedPath>& exposed() const { return exposed_; }
  // Whether every bound host path is still the inode the template bound. A bind pins an inode:
  // an /etc file replaced by rename (ldconfig's ld.so.cache, useradd's passwd) would otherwise
  // stay the old one in every later task. Cheap while nothing changed (path_identities.hpp).
  // Callers serialize it (RootTemplates' mutex).
  bool current() const;
  // The exposed paths opened for Landlock when the template was built, with the access
  // ExposedPath::landlock_rule() gives: each task's ruleset adds them without opening a path.
  const OpenedRules& landlock_rules() const { return landlock_; }

 private:
  posix::Fd ns_;
  std::vector<ExposedPath> exposed_;
  mutable std::optional<PathIdentities> identities_;  // of exposed_, taken before the helper bound them
  OpenedRules landlock_;
};

class RootTemplates {
 public:
  // The template with `anchors` on `staging`, built on first use. Errors as RootTemplate::build.
  [[nodiscard]] Result<std::shared_ptr<const RootTemplate>> get(const TemplateSpec& spec);

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, std::vector<std::string>>, std::shared_ptr<const RootTemplate>> built_;
};

}  // namespace kbfleet::worker
