#pragma once
// The disk layer: each sandboxed task's workspace is a tmpfs of quotas.diskMb, mounted by the
// worker (root) over the workspace directory before the spawn and detached after the artifacts
// are collected. Filling it fails the handler's writes with ENOSPC, never the host's disk, and the
// task ends DISK_LIMIT. Its pages are charged to the task's memory cgroup like any tmpfs page
// the task writes, so memoryMb must cover what the workspace holds (docs/sandbox.md).
#include <cstdint>
#include <filesystem>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

// Mounts the tmpfs (mode 0700, nosuid, nodev) at `dir`, an existing directory, and recreates
// `dir`/out in it. SANDBOX_UNAVAILABLE naming the mount on failure.
[[nodiscard]] Status mount_workspace(const std::filesystem::path& dir, std::int64_t size_mb);

// Detaches a workspace mount at `dir`, if there is one (lazy: an open fd does not block it).
void unmount_workspace(const std::filesystem::path& dir);

// Detaches and removes a finished task's workspace on a background thread. Detaching a mount
// waits for an RCU grace period, milliseconds on a loaded machine, which in the worker's loop
// delayed the next task (docs/performance.md, end to end). Inline if no thread can be started.
// Thread-safe; paths are unique per task attempt, so nothing races with a new workspace.
void retire_workspace(std::filesystem::path dir);

}  // namespace kbfleet::worker
