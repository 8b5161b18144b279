#pragma once
// Content-addressed artifact store: <data>/cas/sha256/<first 2 hex>/<64 hex>. Uploads are written
// to <data>/cas/tmp/ while hashed, and renamed into place only when size and SHA-256 match, so a
// blob in the store is always complete and correct. Nothing holds a whole artifact in memory.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>

#include "common/errors/error.hpp"

namespace kbfleet::broker {

inline constexpr std::int64_t kMaxArtifactBytes = std::int64_t{64} << 30;  // 64 GiB
inline constexpr std::int64_t kMaxReadBytes = std::int64_t{4} << 20;        // one read() reply
// An upload starts the write-back of what it wrote every this many bytes, so the disk works
// while the rest arrives and commit()'s fsync waits only for the tail.
inline constexpr std::int64_t kWritebackBytes = std::int64_t{8} << 20;

class Cas {
 public:
  // How durable a stored blob is; the broker maps its --durability onto it.
  enum class Sync {
    // fsync the blob before its rename and the directory after it: a blob in the store is
    // complete and correct even after a power loss (--durability batch and fsync).
    kFsync,
    // No fsync (--durability none, where no task outlives the process either, and a blob is
    // reachable only through a task). A crash of the machine may leave a torn blob from an
    // earlier run under its name, so contains() vouches only for blobs this Cas stored, and an
    // upload of a blob it does not vouch for replaces the file.
    kNone,
  };

  // Creates the directories; removes leftover temp files from a previous run. IO_ERROR naming
  // the directory on failure.
  [[nodiscard]] static Result<Cas> open(const std::filesystem::path& data_dir, Sync sync = Sync::kFsync);

  // False for an invalid sha256 string (never touches the file system with it), and with
  // Sync::kNone for a blob this Cas did not store.
  bool contains(std::string_view sha256) const;
  // Empty path if sha256 is not 64 lowercase hex, so a peer's string never becomes a path.
  std::filesystem::path path_of(std::string_view sha256) const;

  // An Upload may be appended to and committed on another thread than the one calling the
  // Cas's other functions (broker/cas/blob_writer.hpp); one Upload is used by one thread at a
  // time, except that hash() and write() may run at once on two (below).
  class Upload {
   public:
    virtual ~Upload() = default;  // an uncommitted upload removes its temp file
    // Appends bytes at `offset`, which must equal received(); INVALID_ARGUMENT otherwise, or if
    // the total would exceed the declared size. IO_ERROR on write failure (e.g. disk full).
    // Hashes the bytes as they arrive (one pass) and never fsyncs; with Sync::kFsync, every
    // kWritebackBytes it starts the write-back (sync_file_range(SYNC_FILE_RANGE_WRITE), which
    // does not wait), so commit()'s fsync waits only for the tail.
    [[nodiscard]] virtual Status append(std::int64_t offset, std::string_view bytes) = 0;
    // append() in two halves, for a pipeline that hashes a chunk on one thread while it writes
    // the one before on another (BlobWriter): hash() checks the chunk as append() does (offset
    // == hashed()) and hashes it; write() writes a chunk already hashed (offset == received(),
    // INVALID_ARGUMENT if it was not hashed). Each half is called by one thread at a time, in
    // chunk order, and may run while the other half works on another chunk; commit() after the
    // last write(). A failed write() cannot be retried: the chunk is hashed already.
    [[nodiscard]] virtual Status hash(std::int64_t offset, std::string_view bytes) = 0;
    [[nodiscard]] virtual Status write(std::int64_t offset, std::string_view bytes) = 0;
    // Verifies size (INVALID_ARGUMENT if fewer bytes than declared) and hash (HASH_MISMATCH
    // naming both hashes; the temp file is removed), fsyncs (Sync::kFsync) and renames into
    // place. If the blob already exists the temp file is discarded (dedupe). `declared`: the
    // hash, for an upload begun without one (INVALID_ARGUMENT if it is not 64 lowercase hex);
    // otherwise empty or the same hash (HASH_MISMATCH if not). Append or commit after commit, or
    // after a failed commit, is INVALID_ARGUMENT.
    [[nodiscard]] virtual Status commit(std::string_view declared = {}) = 0;
    virtual std::int64_t received() const = 0;
  };
  // INVALID_ARGUMENT if sha256 is neither empty (declared at commit) nor 64 lowercase hex, or size
  // is out of [0, kMaxArtifactBytes]. The upload keeps a reference to this Cas: commit or drop it
  // before the Cas goes.
  [[nodiscard]] Result<std::unique_ptr<Upload>> begin(std::string_view sha256, std::int64_t size);

  // Up to min(length, kMaxReadBytes) bytes at `offset` (empty at the end). ARTIFACT_NOT_FOUND if
  // the blob is absent; INVALID_ARGUMENT if sha256 is malformed, length is negative, or offset is
  // negative or beyond the end.
  [[nodiscard]] Result<std::string> read(std::string_view sha256, std::int64_t offset, std::int64_t length) const;
  // The same read straight into `out` (e.g. a ZeroMQ message's buffer, so a fetch copies the
  // bytes once, from the page cache): fills min(out.size(), kMaxReadBytes, size - offset) bytes
  // and returns how many. Same errors as read().
  [[nodiscard]] Result<std::size_t> read_into(std::string_view sha256, std::int64_t offset, std::span<char> out) const;
  // Blob size, or ARTIFACT_NOT_FOUND (INVALID_ARGUMENT if sha256 is malformed).
  [[nodiscard]] Result<std::int64_t> size_of(std::string_view sha256) const;

  // The blobs a Sync::kNone store vouches for (below); shared with its uploads. Thread-safe.
  struct Vouched {
    std::mutex mu;
    std::unordered_set<std::string> blobs;
    bool has(const std::string& sha256);
    void add(const std::string& sha256);
  };

 private:
  Cas(std::filesystem::path root, Sync sync) : root_(std::move(root)), sync_(sync) {}
  std::filesystem::path root_;  // <data>/cas
  Sync sync_;
  // Sync::kNone: the blobs (hex) this Cas stored or saw stored again, the only ones contains()
  // vouches for; one entry per distinct blob. Locked: uploads commit on the blob writer's thread
  // while the loop asks contains(). Behind a pointer so uploads keep it across a move.
  std::unique_ptr<Vouched> stored_ = std::make_unique<Vouched>();
};

}  // namespace kbfleet::broker
