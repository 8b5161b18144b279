#pragma once
// Turning an assignment into a launch: the worker's re-check of what the broker routed
// (plugin, handler, capabilities), the sandbox the manifest needs versus what this host offers,
// and the handler's environment and limits. Every refusal is a specific Error:
// PLUGIN_NOT_FOUND, HANDLER_NOT_FOUND, MANIFEST_INVALID, CAPABILITY_MISSING (details: missing,
// requested, granted), NOT_SUPPORTED (net allow-lists), SANDBOX_UNAVAILABLE (a missing netns,
// or the task cgroup could not be created), PERMISSION_DENIED.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "common/manifest/registry.hpp"
#include "common/protocol/messages.hpp"
#include "worker/executor/process.hpp"
#include "worker/sandbox/probe.hpp"

namespace kbfleet::worker {

enum class DegradedPolicy { kRefuse, kAllow };    // --allow-degraded
enum class UnsandboxedPolicy { kRefuse, kAllow }; // --allow-unsandboxed (for `sandbox: none`)

struct WorkerPolicy {
  std::vector<std::string> granted;  // capabilities granted by the operator
  SandboxLayers layers;
  DegradedPolicy degraded = DegradedPolicy::kRefuse;
  UnsandboxedPolicy unsandboxed = UnsandboxedPolicy::kRefuse;
  std::int64_t kill_grace_ms = 2000;
  std::int64_t task_cpu_quota_us = 0;  // --task-cpus: CPU time per 100 ms for each task's cgroup; 0 = none
  std::map<std::string, std::string> host_env;  // the worker's environment
  std::filesystem::path sandbox_root;            // empty dir the tasks' roots are mounted on
};

struct Prepared {
  LaunchSpec spec;  // with the task's cgroup (spec.cgroup) when the cgroup layer is active
  std::vector<std::string> layers;  // what this attempt will run under
  const manifest::Manifest* manifest = nullptr;
};

// `workspace` must exist; out/ is made in it (or in the tmpfs mounted over it, with the disk
// layer) unless it exists already (IO_ERROR if that fails); with the userns layer it is handed to the slot's
// task user. `slot` picks that user (0 .. slots-1, higher for tasks beyond the slots). input_json
// is the handler's stdin.
[[nodiscard]] Result<Prepared> prepare_launch(const protocol::TaskAssignment& task, const manifest::Registry& plugins,
                                              const WorkerPolicy& policy, const std::filesystem::path& workspace,
                                              std::string input_json, int slot = 0);

}  // namespace kbfleet::worker
