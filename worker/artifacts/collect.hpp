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
  protocol::ArtifactMeta meta;  // name, path (expanded), size, sha256 (empty: hash while sending), content_type
  posix::Fd fd;                 // open for reading, positioned at 0 (use pread)
};

// Artifacts up to this size are hashed when collected, so upload_begin carries the hash and the
// broker can skip a blob it already has (the extra pass costs milliseconds). Larger ones are
// hashed by the uploader in the pass that reads them for sending and declared in upload_end: one
// read of the file instead of two, at the price of sending a blob the broker may already hold
// (it still stores one copy). docs/performance.md, "Artifacts".
inline constexpr std::int64_t kHashFirstMaxBytes = std::int64_t{32} << 20;

// Opens and checks the declared file; hashes it if it is at most `hash_first_max` bytes, else
// leaves meta.sha256 empty (size is fstat's). ARTIFACT_NOT_FOUND if the file does not exist;
// PERMISSION_DENIED if the path escapes the workspace or goes through a symlink, or is not a
// regular file; IO_ERROR otherwise.
[[nodiscard]] Result<CollectedArtifact> collect_artifact(int workspace_fd, const manifest::ArtifactDecl& decl,
                                                          std::string_view task_id,
                                                          std::int64_t hash_first_max = kHashFirstMaxBytes);

// openat2 beneath `dir_fd` with no symlinks; PERMISSION_DENIED on escape attempts (message names
// the path), ARTIFACT_NOT_FOUND if a component is missing, NOT_SUPPORTED without openat2 (Linux
// < 5.6), IO_ERROR otherwise. O_CLOEXEC is always added to `flags`.
[[nodiscard]] Result<posix::Fd> open_beneath(int dir_fd, std::string_view relative_path, int flags);

}  // namespace kbfleet::worker
