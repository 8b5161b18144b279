// Guarantees (each has a case in tests/worker/artifacts/collect_test.cpp):
//  - a path never resolves outside the workspace fd: "..", absolute paths and escapes are refused
//    by the kernel (RESOLVE_BENEATH), not by string checks that a rename could race;
//  - no symlink is followed anywhere in the path, and no /proc magic link;
//  - only regular files are read: a directory, FIFO or device is refused without reading it, and
//    a FIFO cannot block the worker;
//  - the hash and size describe the bytes read through the returned fd (for a file hashed while
//    sending, the uploader hashes exactly the bytes it sends).
// Not guaranteed here: a hard link in the workspace to a file outside it is a file of the
// workspace (openat2 cannot tell); the sandbox's mount namespace (issue #4) keeps outside files
// out of the handler's reach so it cannot create such links.
#include "worker/artifacts/collect.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/hash/sha256.hpp"

namespace kbfleet::worker {
namespace {

constexpr std::string_view kDefaultContentType = "application/octet-stream";
constexpr int kOpenat2Retries = 8;

std::string in_quotes(std::string_view path) { return "'" + std::string(path) + "'"; }

// fstat and require a regular file.
Result<struct stat> stat_regular(int fd, std::string_view path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error("fstat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return make_error(ErrorCode::kPermissionDenied, "artifact path " + in_quotes(path) + " is not a regular file",
                      {{"path", std::string(path)}});
  }
  return st;
}

struct Digest {
  std::int64_t size = 0;
  std::string sha256;
};

// Streams the file through SHA-256 with pread, so the fd's offset stays at 0 for the uploader.
Result<Digest> hash_fd(int fd, std::string_view path) {
  hash::Sha256 hasher;
  std::string buf(256 * 1024, '\0');
  Digest d;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), d.size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("pread", path, errno);
    if (n == 0) break;
    hasher.update(buf.data(), static_cast<std::size_t>(n));
    d.size += n;
  }
  d.sha256 = hasher.hex_digest();
  return d;
}

}  // namespace

Result<posix::Fd> open_beneath(int dir_fd, std::string_view relative_path, int flags) {
  const std::string path(relative_path);
  if (path.find('\0') != std::string::npos) {
    return make_error(ErrorCode::kPermissionDenied, "artifact path contains a NUL byte");
  }
  open_how how{};
  // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a trailing symlink with ELOOP, while
  // O_PATH | O_NOFOLLOW would make openat2 return an fd for the symlink itself (openat2(2)).
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, dir_fd, path.c_str(), &how, sizeof how);
    if (fd >= 0) return posix::Fd(static_cast<int>(fd));
    const int err = errno;
    // EAGAIN: a concurrent rename or mount made the kernel distrust its ".." check (openat2(2)).
    if (err == EINTR || (err == EAGAIN && attempt < kOpenat2Retries)) continue;
    switch (err) {
      case EXDEV:  // RESOLVE_BENEATH: "..", an absolute path, or an escape
      case ELOOP:  // RESOLVE_NO_SYMLINKS / RESOLVE_NO_MAGICLINKS: a symlink anywhere in the path
        return make_error(ErrorCode::kPermissionDenied,
                          "artifact path " + in_quotes(path) + " leaves the workspace or goes through a symlink",
                          {{"path", path}});
      case ENOENT:
      case ENOTDIR:  // a component that should be a directory is a file: the path does not exist
        return make_error(ErrorCode::kArtifactNotFound, "no file at " + in_quotes(path) + " in the workspace",
                          {{"path", path}});
      case ENOSYS:
        return make_error(ErrorCode::kNotSupported, "openat2 is not available (Linux 5.6 or later is required)");
      default:
        return errno_error("openat2", path, err);
    }
  }
}

Result<CollectedArtifact> collect_artifact(int workspace_fd, const manifest::ArtifactDecl& decl,
                                           std::string_view task_id, std::int64_t hash_first_max) {
  const std::string path = manifest::expand_artifact_path(decl, task_id);

  // Look before opening for reading: an O_PATH fd opens nothing, so a FIFO or device in the
  // workspace is refused without side effects.
  auto probe = open_beneath(workspace_fd, path, O_PATH);
  if (!probe && probe.error().code == ErrorCode::kArtifactNotFound) {
    return make_error(ErrorCode::kArtifactNotFound,
                      "artifact " + in_quotes(decl.id) + " was declared at " + path + " but the handler did not create it",
                      {{"artifact", decl.id}, {"path", path}});
  }
  if (!probe) return tl::unexpected(probe.error());
  if (auto st = stat_regular(probe->get(), path); !st) return tl::unexpected(st.error());

  // The entry may have been swapped since the probe, so the fd we read is checked again;
  // O_NONBLOCK keeps a swapped-in FIFO from blocking the open.
  auto fd = open_beneath(workspace_fd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (!fd) return tl::unexpected(fd.error());
  auto st = stat_regular(fd->get(), path);
  if (!st) return tl::unexpected(st.error());
  const int fl = ::fcntl(fd->get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd->get(), F_SETFL, fl & ~O_NONBLOCK) != 0) return errno_error("fcntl", path, errno);

  Digest digest{static_cast<std::int64_t>(st->st_size), ""};
  if (digest.size <= hash_first_max) {
    auto hashed = hash_fd(fd->get(), path);
    if (!hashed) return tl::unexpected(hashed.error());
    if (hashed->size != st->st_size) {
      return make_error(ErrorCode::kIoError, "artifact " + in_quotes(decl.id) + " at " + path + " changed while being hashed",
                        {{"artifact", decl.id}, {"path", path}});
    }
    digest = std::move(*hashed);
  }

  CollectedArtifact out;
  out.meta.name = decl.id;
  out.meta.path = path;
  out.meta.size = digest.size;
  out.meta.sha256 = std::move(digest.sha256);
  out.meta.content_type = decl.content_type.empty() ? std::string(kDefaultContentType) : decl.content_type;
  out.fd = std::move(*fd);
  return out;
}

}  // namespace kbfleet::worker
