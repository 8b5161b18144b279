#include "worker/task/prepare.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "common/permissions/env.hpp"
#include "worker/sandbox/isolation.hpp"
#include "worker/sandbox/net_rules.hpp"
#include "worker/sandbox/workspace_fs.hpp"

namespace kbfleet::worker {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

Status check_capabilities(const manifest::Manifest& m, const WorkerPolicy& policy) {
  std::vector<std::string> missing;
  for (const auto& cap : m.capabilities) {
    if (std::find(policy.granted.begin(), policy.granted.end(), cap) == policy.granted.end()) missing.push_back(cap);
  }
  if (missing.empty()) return {};
  return make_error(ErrorCode::kCapabilityMissing,
                    "plugin '" + m.id + "' requires capabilities this worker does not grant: " + join(missing) +
                        " (grant them with --grant on a worker meant to run it)",
                    {{"missing", join(missing)}, {"requested", join(m.capabilities)}, {"granted", join(policy.granted)}});
}

// Chooses the network mode and the layer list, or refuses.
Result<NetMode> choose_sandbox(const manifest::Manifest& m, const WorkerPolicy& policy, std::vector<std::string>& layers) {
  if (m.sandbox == manifest::SandboxMode::kNone) {
    if (policy.unsandboxed != UnsandboxedPolicy::kAllow) {
      return make_error(ErrorCode::kPermissionDenied,
                        "plugin '" + m.id + "' asks for `sandbox: none`; this worker runs unsandboxed plugins only "
                        "when started with --allow-unsandboxed (trusted plugins, development)");
    }
    layers = {"none"};
    return NetMode::kHost;
  }
  if (!m.net.none && !policy.layers.networks) {
    auto why = policy.layers.reasons.find("netallow");
    return make_error(ErrorCode::kNotSupported,
                      "plugin '" + m.id + "' declares a network allow-list, and this worker cannot enforce one (" +
                          (why != policy.layers.reasons.end() ? why->second : std::string("off")) +
                          "), so it refuses the plugin rather than allow everything. Run it on a worker started "
                          "with --task-net CIDR, or use `net: none`.",
                      {{"missing", "netallow"}});
  }
  layers = policy.layers.active();
  layers.erase(std::remove(layers.begin(), layers.end(), m.net.none ? "netallow" : "netns"), layers.end());
  std::vector<std::string> missing;
  std::string why;
  for (const auto& l : policy.layers.missing()) {
    if (l == "cgroup") continue;  // never refused: see attach_cgroup
    missing.push_back(l);
    auto r = policy.layers.reasons.find(l);
    why += (why.empty() ? "" : "; ") + l + ": " + (r != policy.layers.reasons.end() ? r->second : "unavailable");
  }
  if (!missing.empty() && policy.degraded != DegradedPolicy::kAllow) {
    return make_error(ErrorCode::kSandboxUnavailable,
                      "plugin '" + m.id + "' needs the sandbox layers " + join(missing) + ", unavailable on this worker (" +
                          why + "); fix the host, or start the worker with --allow-degraded to run without them",
                      {{"missing", join(missing)}});
  }
  if (!m.net.none) return NetMode::kAllowList;
  return policy.layers.netns ? NetMode::kNone : NetMode::kHost;
}

// Loads the plugin's allow-list into the slot's network namespace (net_slots.hpp); its fd for
// the launcher.
Result<int> prepare_network(const manifest::Manifest& m, const WorkerPolicy& policy, int slot) {
  auto rules = resolve_allow(m.net.allow);
  if (!rules) return tl::unexpected(rules.error());
  return policy.layers.networks->prepare(slot, *rules);
}

// Puts the attempt into a cgroup of its own with the manifest's memory and pids quotas.
//
// Without the cgroup layer nothing is refused: every manifest has memory and pids quotas (they
// default), so refusing would stop every plugin on such a host. The worker logged the missing
// layer at start, `layers` (and so outcome.layers) lacks "cgroup", memory falls back to
// RLIMIT_AS per process and pids is not enforced. A layer that was probed active but fails for
// this task is an environment error like any other missing layer: SANDBOX_UNAVAILABLE naming
// "cgroup", unless the operator allowed degrading.
Status attach_cgroup(const protocol::TaskAssignment& task, const manifest::Manifest& m, const WorkerPolicy& policy,
                     LaunchSpec& spec, std::vector<std::string>& layers) {
  if (!policy.layers.cgroups) return {};
  CgroupLimits limits{m.quotas.memory_mb, m.quotas.pids, policy.task_cpu_quota_us};
  auto cgroup = policy.layers.cgroups->create(task.task_id + "-" + std::to_string(task.attempt), limits);
  if (cgroup) {
    spec.join_cgroups = (*cgroup)->procs_files();
    spec.cgroup = std::move(*cgroup);
    return {};
  }
  layers.erase(std::remove(layers.begin(), layers.end(), "cgroup"), layers.end());
  if (policy.degraded == DegradedPolicy::kAllow) {
    spdlog::warn("task runs without its cgroup (--allow-degraded) task={} error=\"{}\"", task.task_id,
                 cgroup.error().message);
    return {};
  }
  return make_error(ErrorCode::kSandboxUnavailable,
                    "cannot create the cgroup for plugin '" + m.id + "' (" + cgroup.error().message +
                        "); check the worker's cgroup delegation, or start it with --allow-degraded to fall "
                        "back to rlimits",
                    {{"missing", "cgroup"}});
}

}  // namespace

Result<Prepared> prepare_launch(const protocol::TaskAssignment& task, const manifest::Registry& plugins,
                                const WorkerPolicy& policy, const std::filesystem::path& workspace,
                                std::string input_json, int slot) {
  const manifest::PluginEntry* entry = plugins.find(task.plugin, task.version);
  if (entry == nullptr) {
    for (const auto& e : plugins.entries()) {
      if (e.id == task.plugin && e.error && (task.version.empty() || e.version == task.version)) {
        return tl::unexpected(*e.error);
      }
    }
    return make_error(ErrorCode::kPluginNotFound,
                      "this worker has no plugin '" + task.plugin + (task.version.empty() ? "" : "@" + task.version) + "'");
  }
  const manifest::Manifest& m = *entry->manifest;
  auto handler = m.handlers.find(task.handler);
  if (handler == m.handlers.end()) {
    return make_error(ErrorCode::kHandlerNotFound, "plugin '" + m.id + "' has no handler '" + task.handler + "'");
  }
  if (auto st = check_capabilities(m, policy); !st) return tl::unexpected(st.error());

  Prepared p;
  p.manifest = &m;
  auto net = choose_sandbox(m, policy, p.layers);
  if (!net) return tl::unexpected(net.error());

  permissions::EnvInputs env_in;
  env_in.allowed = &m.env;
  env_in.submitted = &task.env;
  env_in.host = &policy.host_env;
  env_in.kbfleet = {{"KBFLEET_TASK_ID", task.task_id},
                    {"KBFLEET_ATTEMPT", std::to_string(task.attempt)},
                    {"KBFLEET_PLUGIN", m.id},
                    {"KBFLEET_HANDLER", task.handler},
                    {"KBFLEET_WORKSPACE", workspace.string()},
                    {"KBFLEET_OUT", (workspace / "out").string()}};
  auto env = permissions::build_env(env_in);
  if (!env) return tl::unexpected(env.error());

  LaunchSpec& s = p.spec;
  s.exec = entry->root / handler->second.exec;
  s.args = handler->second.args;
  s.env = std::move(*env);
  s.workspace = workspace;
  s.stdin_bytes = std::move(input_json);
  s.net = *net;
  s.limits.timeout_ms = task.timeout_ms > 0 ? task.timeout_ms : m.quotas.timeout_ms;
  s.limits.cpu_ms = m.quotas.cpu_ms;
  s.limits.memory_mb = m.quotas.memory_mb;
  s.limits.pids = m.quotas.pids;
  s.limits.output_bytes = m.quotas.output_bytes;
  s.limits.kill_grace_ms = policy.kill_grace_ms;
  if (auto st = attach_cgroup(task, m, policy, s, p.layers); !st) return tl::unexpected(st.error());
  if (m.sandbox != manifest::SandboxMode::kNone && policy.layers.namespaces) {
    if (auto st = mount_workspace(workspace, m.quotas.disk_mb); !st) return tl::unexpected(st.error());
    s.limits.disk_mb = m.quotas.disk_mb;
  } else if (::mkdir((workspace / "out").c_str(), 0777) < 0 && errno != EEXIST) {
    return errno_error("mkdir", (workspace / "out").string(), errno);
  }
  if (m.sandbox != manifest::SandboxMode::kNone) {
    IsolationRequest request{policy.sandbox_root, entry->root, s.workspace, m.fs.read, m.fs.write, slot, 64};
    if (s.net == NetMode::kAllowList) {
      auto netns = prepare_network(m, policy, slot);
      if (!netns) return tl::unexpected(netns.error());
      request.netns_fd = *netns;
    }
    auto iso = make_isolation(policy.layers, request);
    if (iso) {
      s.isolation = std::move(*iso);
    } else {
      auto e = iso.error();
      if (e.code != ErrorCode::kSandboxUnavailable) {
        e.message = "cannot prepare the sandbox of plugin '" + m.id + "': " + e.message;
        e.code = ErrorCode::kSandboxUnavailable;
      }
      return tl::unexpected(e);
    }
  }
  return p;
}

}  // namespace kbfleet::worker
