#include "worker/sandbox/isolation.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "worker/sandbox/landlock.hpp"

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;

// What a sandboxed handler may touch (Landlock): system directories read+exec, the essential
// /etc files read, device nodes read+write (with a new root, the template's paths, opened when
// it was built), its plugin read+exec, kbfleet-init (by its fd: the inode that is exec'd), and
// inside the workspace only what permissions.fs grants. The fresh /tmp, /dev/shm and /proc are
// added by the child (isolation.hpp).
std::vector<FsRule> landlock_rules(const Isolation& iso, const IsolationRequest& req, const fs::path& plugin_root) {
  std::vector<FsRule> rules;
  const fs::path workspace = req.workspace.lexically_normal();
  if (iso.root) {
    for (const auto& e : iso.root->exposed()) {
      if (e.host != workspace) rules.push_back(e.landlock_rule());
    }
  } else {
    // No new root: the host's tree is visible, so name the same places explicitly.
    for (const char* p : {"/usr", "/bin", "/sbin", "/lib", "/lib64"}) rules.push_back({p, FsAccess::kReadExec});
    rules.push_back({"/etc", FsAccess::kRead});
    rules.push_back({"/proc", FsAccess::kRead});
    rules.push_back({"/tmp", FsAccess::kReadWrite});
    for (const char* p : {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}) {
      rules.push_back({p, FsAccess::kReadWrite});
    }
    rules.push_back({plugin_root, FsAccess::kReadExec});
  }
  for (auto& r : workspace_rules(workspace, req.fs_read, req.fs_write)) rules.push_back(std::move(r));
  return rules;
}

Result<posix::Fd> make_ruleset(const Isolation& iso, const IsolationRequest& req, const fs::path& plugin_root, int abi) {
  auto rules = landlock_rules(iso, req, plugin_root);
  if (!iso.root) return make_landlock_ruleset(rules, abi);
  std::vector<FdRule> fds;
  if (iso.init_exe >= 0) fds.push_back({iso.init_exe, FsAccess::kReadExec});
  return make_landlock_ruleset(iso.root_template->landlock_rules(), fds, rules, abi);
}

Status hand_workspace_to(const SlotIdentity& id, const fs::path& workspace) {
  for (const auto& dir : {workspace, workspace / "out"}) {
    if (::chown(dir.c_str(), id.host_uid, id.host_gid) < 0 && !(errno == ENOENT && dir != workspace)) {
      return errno_error("chown", dir.string(), errno);
    }
  }
  if (::chmod(workspace.c_str(), 0700) < 0) return errno_error("chmod", workspace.string(), errno);
  return {};
}

}  // namespace

Result<std::shared_ptr<const Isolation>> make_isolation(const SandboxLayers& have, const IsolationRequest& req) {
  auto iso = std::make_shared<Isolation>();
  std::error_code ec;
  // Bound at its real path: a symlinked plugins directory would otherwise bind the link.
  auto plugin_root = fs::canonical(req.plugin_root, ec);
  if (ec) return make_error(ErrorCode::kIoError, "cannot resolve plugin root " + req.plugin_root.string() + ": " + ec.message());
  if (have.namespaces) {
    TaskRootSpec task{{plugin_root}, req.workspace, req.tmp_mb};
    auto anchors = anchors_of(task);
    if (!anchors) return tl::unexpected(anchors.error());
    if (!have.root_templates) {
      return make_error(ErrorCode::kSandboxUnavailable, "no root template cache (the layers were not probed)", {{"step", "mntns"}});
    }
    auto tmpl = have.root_templates->get({req.staging, std::move(*anchors)});
    if (!tmpl) return tl::unexpected(tmpl.error());
    auto plan = MountPlan::make_task(task);
    if (!plan) return tl::unexpected(plan.error());
    iso->root = std::move(*plan);
    iso->root_template = std::move(*tmpl);
    iso->init_exe = have.init_exe->get();
  }
  if (have.identities && iso->root) {
    auto id = have.identities->get(req.slot);
    if (!id) return tl::unexpected(id.error());
    if (auto st = hand_workspace_to(*id, req.workspace); !st) return tl::unexpected(st.error());
    iso->identity = *id;
    iso->netns_fd = req.netns_fd;
  }
  iso->drop_capabilities = have.drop_capabilities;
  if (have.landlock_abi > 0) {
    auto ruleset = make_ruleset(*iso, req, plugin_root, have.landlock_abi);
    if (!ruleset) return tl::unexpected(ruleset.error());
    iso->landlock = std::move(*ruleset);
    iso->landlock_fresh_write = landlock_access(FsAccess::kReadWrite, have.landlock_abi);
    iso->landlock_fresh_read = landlock_access(FsAccess::kRead, have.landlock_abi);
  }
  if (have.seccomp) iso->seccomp = have.seccomp->program();
  return std::shared_ptr<const Isolation>(std::move(iso));
}

}  // namespace kbfleet::worker
