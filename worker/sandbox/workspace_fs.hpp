#pragma once
// The disk layer: each sandboxed task's workspace is a tmpfs of quotas.diskMb, mounted by the
// worker (root) over the workspace directory before the spawn and detached after the artifacts
// are collected. Filling it fails the handler's writes with ENOSPC, never the host's disk, and the
// task ends DISK_LIMIT. Its pages are charged to the task's memory cgroup like any tmpfs page
// the task writes, so memoryMb must cover what the workspace holds (docs/sandbox.md).
//
// The directory a tmpfs workspace is mounted on is never seen by a task (the task sees the tmpfs
// only), so once detached it is empty and is kept for a later workspace under a spare name
// (`<parent>/.spare-<n>`) instead of being removed: a mkdir and an rmdir per task in the shared
// --work directory cost the worker's loop milliseconds on ext4, mostly waiting for the parent
// directory's lock while the background thread removed the previous workspace
// (docs/performance.md, end to end).
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

// Creates the (empty) directory `dir` for a workspace: a spare kept by retire_workspace() renamed
// into place when one is ready in dir's parent, else a new directory; nothing if `dir` is a
// directory already. IO_ERROR naming the call.
[[nodiscard]] Status create_workspace(const std::filesystem::path& dir);

// Mounts the tmpfs (mode 0700, nosuid, nodev) at `dir`, an existing directory, and recreates
// `dir`/out in it. SANDBOX_UNAVAILABLE naming the mount on failure.
[[nodiscard]] Status mount_workspace(const std::filesystem::path& dir, std::int64_t size_mb);

// Detaches a workspace mount at `dir`, if there is one (lazy: an open fd does not block it).
void unmount_workspace(const std::filesystem::path& dir);

// Detaches and removes a finished task's workspace on a background thread (a few of them, so
// that one detach's wait does not hold up the next). Detaching a mount
// waits for an RCU grace period, milliseconds on a loaded machine, which in the worker's loop
// delayed the next task (docs/performance.md, end to end). A directory that is empty once
// detached, a real directory owned by the worker, becomes a spare for create_workspace(); anything
// else is removed with its contents. Inline if no thread can be started.
// Thread-safe; paths are unique per task attempt, so nothing races with a new workspace.
void retire_workspace(std::filesystem::path dir);

// For tests: blocks until every workspace handed to retire_workspace() so far is retired.
void wait_workspaces_retired();

// True for the names retire_workspace() gives spares (".spare-<n>"): the worker's clean-up at start
// and exit removes them with the leftovers of earlier runs.
bool is_spare_workspace_name(std::string_view name);

}  // namespace kbfleet::worker
