#pragma once
// The launcher's steps for one attempt of a sandboxed task, as the worker runs them for every
// task it is assigned (worker.cpp) and kbfleet-launch-bench runs them in a local loop (the
// baseline of the end-to-end benchmark, bench/launch/):
//   start_attempt  -> the workspace directory, the input as JSON, prepare_launch (permissions,
//                     cgroup, tmpfs workspace, isolation) and HandlerProcess::spawn;
//   (the caller supervises run.process from its poll loop until finished())
//   finish_attempt -> the outcome from how the process ended, the declared artifacts collected;
//   retire_attempt -> the workspace fd closed, the workspace retired (workspace_fs.hpp).
// Nothing here talks to the broker: sending events and results is the worker's.
#include <filesystem>
#include <string>
#include <vector>

#include <tl/expected.hpp>

#include "common/errors/error.hpp"
#include "common/manifest/registry.hpp"
#include "worker/task/prepare.hpp"
#include "worker/task/task_run.hpp"

namespace kbfleet::worker {

// Why an attempt did not start, and the layers it would have run under (empty if it was refused
// before the sandbox was chosen): what the worker reports as the attempt's failed outcome.
struct AttemptRefused {
  Error error;
  std::vector<std::string> layers;
};

// Starts run.task() in slot run.slot: sets run.workspace (work_dir/<task id>-<attempt>),
// run.workspace_fd, run.manifest, run.layers and run.process. Errors: IO_ERROR (workspace),
// the input's decoding error, and every error of prepare_launch() and HandlerProcess::spawn(),
// logged at warn.
[[nodiscard]] tl::expected<void, AttemptRefused> start_attempt(TaskRun& run, const manifest::Registry& plugins,
                                                              const WorkerPolicy& policy,
                                                              const std::filesystem::path& work_dir);

// After run.process->finished(): fills run.outcome (state, error, exit status, CPU, layers; the
// fd-3 result kept), queues the declared artifacts in run.to_upload (or records why one is
// missing in run.outcome.artifact_errors) and releases the process, which removes its cgroup.
void finish_attempt(TaskRun& run);

// Once the outcome is reported: closes the workspace fd and retires the workspace. Also for a
// refused attempt (its directory may exist); nothing for a run without a workspace.
void retire_attempt(TaskRun& run);

}  // namespace kbfleet::worker
