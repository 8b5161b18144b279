#include "worker/task/attempt.hpp"

#include <fcntl.h>

#include <spdlog/spdlog.h>

#include "common/protocol/wire.hpp"
#include "worker/artifacts/collect.hpp"
#include "worker/sandbox/workspace_fs.hpp"

namespace kbfleet::worker {

namespace state = protocol::state;

tl::expected<void, AttemptRefused> start_attempt(TaskRun& run, const manifest::Registry& plugins,
                                                 const WorkerPolicy& policy, const std::filesystem::path& work_dir) {
  const auto& task = run.task();
  run.workspace = work_dir / (task.task_id + "-" + std::to_string(task.attempt));
  // Only the directory: preparing makes out/ in it, or in the tmpfs it mounts over it.
  if (auto st = create_workspace(run.workspace); !st) {
    return tl::unexpected(AttemptRefused{
        Error{ErrorCode::kIoError, "cannot create workspace: " + st.error().message, st.error().details}, {}});
  }
  std::string input = "null";
  if (!task.input.empty()) {
    auto json = protocol::msgpack_to_json(task.input);
    if (!json) return tl::unexpected(AttemptRefused{json.error(), {}});
    input = std::move(*json);
  }
  auto prepared = prepare_launch(task, plugins, policy, run.workspace, std::move(input), run.slot);
  if (!prepared) {
    spdlog::warn("task refused task={} code={} error=\"{}\"", task.task_id, code_name(prepared.error().code),
                 prepared.error().message);
    return tl::unexpected(AttemptRefused{prepared.error(), {}});
  }
  // Opened only now: preparing may have mounted the task's size-limited workspace over the dir.
  run.workspace_fd = posix::Fd(::open(run.workspace.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  run.manifest = prepared->manifest;
  run.layers = prepared->layers;
  auto process = HandlerProcess::spawn(prepared->spec);
  if (!process) {
    spdlog::warn("handler did not start task={} error=\"{}\"", task.task_id, process.error().message);
    return tl::unexpected(AttemptRefused{process.error(), std::move(prepared->layers)});
  }
  run.process = std::move(*process);
  spdlog::debug("handler started task={} pid={}", task.task_id, run.process->pid());
  return {};
}

void finish_attempt(TaskRun& run) {
  const auto& p = run.process->outcome();
  const auto& quotas = run.manifest->quotas;
  Limits limits;
  limits.timeout_ms = run.task().timeout_ms > 0 ? run.task().timeout_ms : quotas.timeout_ms;
  limits.cpu_ms = quotas.cpu_ms;
  limits.output_bytes = quotas.output_bytes;
  limits.memory_mb = quotas.memory_mb;
  limits.pids = quotas.pids;
  std::string result = std::move(run.outcome.result);
  run.outcome = outcome_of(p, limits);
  run.outcome.result = std::move(result);
  run.outcome.layers = run.layers;
  run.process.reset();
  // Collect declared artifacts; a missing one matters only when the handler claims success.
  for (const auto& decl : run.manifest->artifacts) {
    auto art = collect_artifact(run.workspace_fd.get(), decl, run.task().task_id);
    if (art) {
      run.to_upload.push_back(std::move(*art));
    } else if (art.error().code != ErrorCode::kArtifactNotFound || run.outcome.state == state::kSucceeded) {
      run.outcome.artifact_errors.push_back(decl.id + ": " + art.error().to_string());
    }
  }
}

void retire_attempt(TaskRun& run) {
  run.workspace_fd.reset();
  if (!run.workspace.empty()) retire_workspace(run.workspace);
}

}  // namespace kbfleet::worker
