#pragma once
// Collecting a declared artifact from a task workspace after the handler exited. Paths are
// resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), never by
// string prefix, so "../x", absolute paths, symlinks (anywhere in the path) and /proc magic
// links cannot make the worker read outside the workspace.
#include <string_view>

#include "common/errors/error.hpp"
#include "common/manifest/manifest.hpp"
#include "common/posix/fd.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::worker {

struct CollectedArtifact {
  protocol::ArtifactMeta meta;  // name, path (expanded), size, sha256, content_type
  posix::Fd fd;                 // open for reading, positioned at 0 (use pread)
};

// ARTIFACT_NOT_FOUND if the file does not exist; PERMISSION_DENIED if the path escapes the
// workspace or goes through a symlink, or is not a regular file; IO_ERROR otherwise.
[[nodiscard]] Result<CollectedArtifact> collect_artifact(int workspace_fd, const manifest::ArtifactDecl& decl,
                                                          std::string_view task_id);

// openat2 beneath `dir_fd` with no symlinks; PERMISSION_DENIED on escape attempts (message names
// the path), ARTIFACT_NOT_FOUND if a component is missing, NOT_SUPPORTED without openat2 (Linux
// < 5.6), IO_ERROR otherwise. O_CLOEXEC is always added to `flags`.
[[nodiscard]] Result<posix::Fd> open_beneath(int dir_fd, std::string_view relative_path, int flags);

}  // namespace kbfleet::worker
