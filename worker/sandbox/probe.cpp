#include "worker/sandbox/probe.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "worker/sandbox/cgroup_pool.hpp"
#include "worker/sandbox/landlock.hpp"

namespace kbfleet::worker {
namespace {

// Runs `step` in a forked child and reports whether it returned true.
template <typename F>
bool works_in_child(F step) {
  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) ::_exit(step() ? 0 : 1);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::filesystem::path default_init() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path("kbfleet-init") : self.parent_path() / "kbfleet-init";
}

void probe_namespaces(const ProbeOptions& options, SandboxLayers& layers) {
  const bool root = ::geteuid() == 0;
  if (!root) {
    for (const char* l : {"mntns", "pidns", "ipcns", "utsns", "disk"}) layers.reasons[l] = "the worker is not root";
    layers.reasons["userns"] = "the worker is not root (it maps a host uid per slot)";
    layers.reasons["caps"] = "the worker is not root (it holds no capability to drop)";
    return;
  }
  layers.drop_capabilities = true;
  bool ns = works_in_child([] { return ::unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) == 0; });
  auto init = options.init.empty() ? default_init() : options.init;
  auto exe = std::make_shared<posix::Fd>(::open(init.c_str(), O_PATH | O_CLOEXEC));
  std::string why;
  if (!ns) {
    why = "unshare(CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWUTS) failed";
  } else if (!*exe || ::faccessat(exe->get(), "", X_OK, AT_EMPTY_PATH) != 0) {
    why = "kbfleet-init not found or not executable at " + init.string() + " (install it next to kbfleet-worker)";
  }
  if (why.empty()) {
    layers.namespaces = true;
    layers.init_exe = std::move(exe);
    layers.root_templates = std::make_shared<RootTemplates>();
  } else {
    for (const char* l : {"mntns", "pidns", "ipcns", "utsns", "disk"}) layers.reasons[l] = why;
  }
  auto ids = SlotIdentities::create(options.uid_base, options.slots);
  if (ids && layers.namespaces) {
    layers.identities = std::move(*ids);
  } else {
    layers.reasons["userns"] = ids ? "needs the mount and pid namespaces" : ids.error().message;
  }
}

}  // namespace

const std::vector<std::string>& isolation_layers() {
  static const std::vector<std::string> layers{"mntns", "pidns", "ipcns", "utsns", "disk", "userns", "caps", "landlock", "seccomp"};
  return layers;
}

std::vector<std::string> SandboxLayers::active() const {
  std::vector<std::string> out{"pgroup", "rlimits", "env", "fds"};
  if (netns) out.emplace_back("netns");
  if (namespaces) out.insert(out.end(), {"mntns", "pidns", "ipcns", "utsns", "disk"});
  if (identities) out.emplace_back("userns");
  if (drop_capabilities) out.emplace_back("caps");
  if (landlock_abi > 0) out.emplace_back("landlock");
  if (seccomp) out.emplace_back("seccomp");
  if (cgroups) out.emplace_back("cgroup");
  if (networks) out.emplace_back("netallow");
  return out;
}

std::vector<std::string> SandboxLayers::missing() const {
  auto have = active();
  std::vector<std::string> out;
  std::vector<std::string> all{"netns"};
  all.insert(all.end(), isolation_layers().begin(), isolation_layers().end());
  all.emplace_back("cgroup");
  for (const auto& l : all) {
    if (std::find(have.begin(), have.end(), l) == have.end()) out.push_back(l);
  }
  return out;
}

SandboxLayers probe_sandbox(const ProbeOptions& options) {
  SandboxLayers layers;
  layers.netns = works_in_child([] { return ::unshare(CLONE_NEWNET) == 0; });
  if (!layers.netns) layers.reasons["netns"] = "unshare(CLONE_NEWNET) failed (needs root or CAP_SYS_ADMIN)";
  probe_namespaces(options, layers);
  layers.landlock_abi = landlock_abi();
  if (layers.landlock_abi == 0) layers.reasons["landlock"] = "the kernel has no Landlock (or it is not in lsm=)";
  auto filter = SeccompFilter::build();
  if (filter) {
    layers.seccomp = std::make_shared<const SeccompFilter>(std::move(*filter));
  } else {
    layers.reasons["seccomp"] = filter.error().message;
  }
  auto cgroups = probe_cgroups(CgroupOptions{options.cpu_bandwidth});
  if (cgroups) {
    layers.cgroups = pool_cgroups(std::move(*cgroups), options.slots);
  } else {
    layers.reasons["cgroup"] = cgroups.error().message;
  }
  if (options.task_net.empty()) {
    layers.reasons["netallow"] = "off (start the worker with --task-net CIDR to run plugins with a net allow-list)";
  } else if (!layers.identities) {
    layers.reasons["netallow"] = "needs the mount, pid and user namespaces (a root worker)";
  } else if (auto nets = SlotNetworks::create(options.task_net, options.slots); nets) {
    layers.networks = std::move(*nets);
  } else {
    layers.reasons["netallow"] = nets.error().message;
  }
  return layers;
}

}  // namespace kbfleet::worker
