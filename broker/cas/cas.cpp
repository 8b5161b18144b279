#include "broker/cas/cas.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <system_error>

#include "common/hash/sha256.hpp"
#include "common/posix/file_write.hpp"

namespace kbfleet::broker {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kPreallocateBytes = std::int64_t{64} << 20;

tl::unexpected<Error> invalid_sha(std::string_view sha256) {
  // Never echo more than a short prefix of what a peer sent.
  return make_error(ErrorCode::kInvalidArgument,
                    "artifact hash must be 64 lowercase hex characters, got '" +
                        std::string(sha256.substr(0, 80)) + "'");
}

Status make_dir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return errno_error("mkdir", dir.native(), errno);
  return {};
}

// A rename or a new entry is durable only once its directory is fsynced (rename(2), fsync(2):
// "Calling fsync() does not necessarily ensure that the entry in the directory ... has also
// reached disk").
Status fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error("open", dir.native(), errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return errno_error("fsync", dir.native(), err);
  return {};
}

// Temp files left by a crash or a kill are incomplete by definition: nothing refers to them.
Status remove_stale_temps(const fs::path& tmp_dir) {
  DIR* d = ::opendir(tmp_dir.c_str());
  if (d == nullptr) return errno_error("opendir", tmp_dir.native(), errno);
  int dfd = ::dirfd(d);
  Status status;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (::unlinkat(dfd, e->d_name, 0) != 0 && errno != ENOENT) {
      status = errno_error("unlinkat", (tmp_dir / e->d_name).native(), errno);
      break;
    }
  }
  ::closedir(d);
  return status;
}

class FileUpload final : public Cas::Upload {
 public:
  // `sha256` empty: the hash is declared to commit() (a sender that hashes while it sends).
  // `stored`: the Cas's set of blobs it vouches for, kept up to date with Sync::kNone.
  FileUpload(const Cas& cas, Cas::Sync sync, Cas::Vouched* stored, fs::path temp, int fd,
             std::string sha256, std::int64_t size)
      : cas_(cas), sync_(sync), stored_(stored), temp_(std::move(temp)), fd_(fd), sha256_(std::move(sha256)), size_(size) {}
  ~FileUpload() override { discard(); }
  FileUpload(const FileUpload&) = delete;
  FileUpload& operator=(const FileUpload&) = delete;

  Status append(std::int64_t offset, std::string_view bytes) override {
    if (auto st = check(offset, bytes, received_); !st) return st;
    if (hashed_ != received_) return out_of_order();
    // Written before hashed: a chunk whose write failed (ENOSPC) can be appended again.
    if (auto st = write_at(bytes); !st) return st;
    hasher_.update(bytes);
    hashed_ += static_cast<std::int64_t>(bytes.size());
    return {};
  }

  Status hash(std::int64_t offset, std::string_view bytes) override {
    if (auto st = check(offset, bytes, hashed_); !st) return st;
    hasher_.update(bytes);
    hashed_ += static_cast<std::int64_t>(bytes.size());
    return {};
  }

  Status write(std::int64_t offset, std::string_view bytes) override {
    if (auto st = check(offset, bytes, received_); !st) return st;
    if (received_ + static_cast<std::int64_t>(bytes.size()) > hashed_) return out_of_order();
    return write_at(bytes);
  }

  Status commit(std::string_view declared) override {
    if (done_) return finished();
    if (sha256_.empty()) {
      if (!hash::is_sha256_hex(declared)) {
        discard();
        return make_error(ErrorCode::kInvalidArgument,
                          "an upload begun without its hash must declare it when it ends (sha256: 64 lowercase hex)");
      }
      sha256_ = std::string(declared);
    } else if (!declared.empty() && declared != sha256_) {
      discard();
      return make_error(ErrorCode::kHashMismatch,
                        "artifact hash mismatch: declared " + sha256_ + " at the start and " +
                            std::string(declared.substr(0, 80)) + " at the end",
                        {{"declared", sha256_}});
    }
    final_ = cas_.path_of(sha256_);
    if (received_ != size_) {
      discard();
      return make_error(ErrorCode::kInvalidArgument, "artifact incomplete: declared " + std::to_string(size_) +
                                                         " bytes, received " + std::to_string(received_));
    }
    if (hashed_ != received_) {
      discard();
      return out_of_order();
    }
    std::string actual = hasher_.hex_digest();
    if (actual != sha256_) {
      discard();
      return make_error(ErrorCode::kHashMismatch,
                        "artifact hash mismatch: declared " + sha256_ + ", received " + actual,
                        {{"declared", sha256_}, {"received", actual}});
    }
    struct stat st;
    const bool vouched = sync_ == Cas::Sync::kFsync || stored_->has(sha256_);
    if (vouched && ::stat(final_.c_str(), &st) == 0) {
      discard();  // dedupe: identical content is already stored
      return {};
    }
    auto st_persist = persist();  // without fsync: replaces a file this Cas does not vouch for
    if (st_persist && sync_ == Cas::Sync::kNone) stored_->add(sha256_);
    return st_persist;
  }

  std::int64_t received() const override { return received_; }

 private:
  // The checks append() and hash() make; `at` is where the chunk must start.
  Status check(std::int64_t offset, std::string_view bytes, std::int64_t at) const {
    if (done_) return finished();
    if (offset != at) {
      return make_error(ErrorCode::kInvalidArgument, "artifact chunk at offset " + std::to_string(offset) +
                                                         ", expected offset " + std::to_string(at));
    }
    if (static_cast<std::int64_t>(bytes.size()) > size_ - at) {
      return make_error(ErrorCode::kInvalidArgument,
                        "artifact chunk would exceed the declared size of " + std::to_string(size_) + " bytes");
    }
    return {};
  }

  // Writes a checked chunk at received_ and advances it.
  Status write_at(std::string_view bytes) {
    preallocate(received_ + static_cast<std::int64_t>(bytes.size()));
    // pwrite at the logical offset, so a chunk that failed half-way (ENOSPC) is rewritten whole;
    // in slices, so the page cache takes small folios (common/posix/file_write.hpp).
    if (auto st = posix::pwrite_sliced(fd_, bytes, received_, temp_.native()); !st) return st;
    received_ += static_cast<std::int64_t>(bytes.size());
    if (sync_ == Cas::Sync::kFsync) start_writeback(/*at_least=*/kWritebackBytes);
    return {};
  }

  static tl::unexpected<Error> out_of_order() {
    return make_error(ErrorCode::kInvalidArgument, "artifact chunk written before it was hashed");
  }

  // Starts writing back the bytes appended since the last call, once there are `at_least` of
  // them. Without it the page cache holds the whole artifact dirty (the kernel starts on its own
  // only at dirty_background_ratio, gigabytes on a large machine, or after 30 s), and the fsync
  // in persist() would then write all of it while the broker's loop waits. SYNC_FILE_RANGE_WRITE
  // only queues the I/O (sync_file_range(2)); durability still comes from persist()'s fsync.
  void start_writeback(std::int64_t at_least) {
    if (received_ - writeback_from_ < at_least) return;
    (void)::sync_file_range(fd_, writeback_from_, received_ - writeback_from_, SYNC_FILE_RANGE_WRITE);
    writeback_from_ = received_;
  }

  // Allocates the file's blocks ahead of the writes, kPreallocateBytes at a time (never past the
  // declared size, so a peer cannot reserve space it does not send). Without it ext4's delayed
  // allocation reserves and maps blocks page by page under each pwrite, which cost 1.5-4x the
  // copy itself (docs/performance.md). KEEP_SIZE: the file's size stays what was written. Only
  // an optimisation: on any error (a file system without fallocate, ENOSPC) it stops trying and
  // pwrite reports what matters.
  void preallocate(std::int64_t end) {
    if (end <= allocated_) return;
    const std::int64_t to = std::min(size_, std::max(end, allocated_ + kPreallocateBytes));
    if (::fallocate(fd_, FALLOC_FL_KEEP_SIZE, allocated_, to - allocated_) != 0) {
      allocated_ = size_;
      return;
    }
    allocated_ = to;
  }

  // Data before name: fsync the file, rename it, then fsync the directory holding the new name.
  Status persist() {
    const bool durable = sync_ == Cas::Sync::kFsync;
    if (durable && ::fsync(fd_) != 0) {
      int err = errno;
      discard();
      return errno_error("fsync", temp_.native(), err);
    }
    if (::close(std::exchange(fd_, -1)) != 0 && errno != EINTR) {
      int err = errno;
      discard();
      return errno_error("close", temp_.native(), err);
    }
    const fs::path shard = final_.parent_path();
    bool new_shard = ::mkdir(shard.c_str(), 0750) == 0;
    if (!new_shard && errno != EEXIST) {
      int err = errno;
      discard();
      return errno_error("mkdir", shard.native(), err);
    }
    if (::rename(temp_.c_str(), final_.c_str()) != 0) {
      int err = errno;
      discard();
      return errno_error("rename", temp_.native() + " -> " + final_.native(), err);
    }
    done_ = true;
    if (!durable) return {};
    // From here the blob is complete and in place; a failed directory fsync only weakens
    // durability across a power loss, and is still reported.
    if (new_shard) {
      if (auto s = fsync_dir(shard.parent_path()); !s) return s;
    }
    return fsync_dir(shard);
  }

  void discard() {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (!done_) ::unlink(temp_.c_str());
    done_ = true;
  }

  static tl::unexpected<Error> finished() {
    return make_error(ErrorCode::kInvalidArgument, "artifact upload already committed or abandoned");
  }

  const Cas& cas_;  // outlives its uploads (the broker owns both)
  Cas::Sync sync_;
  Cas::Vouched* stored_;  // owned by the Cas
  fs::path temp_;
  int fd_;
  fs::path final_;  // known at commit
  std::string sha256_;
  std::int64_t size_;
  std::int64_t received_ = 0;  // written; the write() side's
  // Hashed; the hash() side's. Atomic: write() reads it while hash() may move it.
  std::atomic<std::int64_t> hashed_ = 0;
  std::int64_t allocated_ = 0;       // bytes preallocated from the start of the file
  std::int64_t writeback_from_ = 0;  // start of the bytes whose write-back is not started yet
  hash::Sha256 hasher_;
  // The temp file no longer exists (renamed or removed). Atomic: hash() reads it on another
  // thread than the write() or commit() that sets it.
  std::atomic<bool> done_ = false;
};

}  // namespace

bool Cas::Vouched::has(const std::string& sha256) {
  std::lock_guard lock(mu);
  return blobs.count(sha256) > 0;
}

void Cas::Vouched::add(const std::string& sha256) {
  std::lock_guard lock(mu);
  blobs.insert(sha256);
}

Result<Cas> Cas::open(const fs::path& data_dir, Sync sync) {
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) {
    return make_error(ErrorCode::kIoError, "create_directories(" + data_dir.native() + "): " + ec.message());
  }
  fs::path root = data_dir / "cas";
  for (const fs::path& dir : {root, root / "sha256", root / "tmp"}) {
    if (auto s = make_dir(dir); !s) return tl::unexpected(s.error());
  }
  if (auto s = remove_stale_temps(root / "tmp"); !s) return tl::unexpected(s.error());
  return Cas(std::move(root), sync);
}

bool Cas::contains(std::string_view sha256) const {
  if (!hash::is_sha256_hex(sha256)) return false;
  if (sync_ == Sync::kNone && !stored_->has(std::string(sha256))) return false;
  struct stat st;
  return ::stat(path_of(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

fs::path Cas::path_of(std::string_view sha256) const {
  if (!hash::is_sha256_hex(sha256)) return {};
  return root_ / "sha256" / std::string(sha256.substr(0, 2)) / std::string(sha256);
}

Result<std::unique_ptr<Cas::Upload>> Cas::begin(std::string_view sha256, std::int64_t size) {
  if (!sha256.empty() && !hash::is_sha256_hex(sha256)) return invalid_sha(sha256);
  if (size < 0 || size > kMaxArtifactBytes) {
    return make_error(ErrorCode::kInvalidArgument, "artifact size " + std::to_string(size) +
                                                       " is out of range [0, " + std::to_string(kMaxArtifactBytes) +
                                                       "]");
  }
  std::string temp = (root_ / "tmp" / "upload-XXXXXX").native();
  int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return errno_error("mkostemp", temp, errno);
  return std::make_unique<FileUpload>(*this, sync_, stored_.get(), fs::path(temp), fd, std::string(sha256), size);
}

Result<std::string> Cas::read(std::string_view sha256, std::int64_t offset, std::int64_t length) const {
  if (length < 0) return make_error(ErrorCode::kInvalidArgument, "artifact read needs offset >= 0 and length >= 0");
  std::string out(static_cast<std::size_t>(std::min(length, kMaxReadBytes)), '\0');
  auto got = read_into(sha256, offset, out);
  if (!got) return tl::unexpected(got.error());
  out.resize(*got);
  return out;
}

Result<std::size_t> Cas::read_into(std::string_view sha256, std::int64_t offset, std::span<char> out) const {
  if (!hash::is_sha256_hex(sha256)) return invalid_sha(sha256);
  if (offset < 0) return make_error(ErrorCode::kInvalidArgument, "artifact read needs offset >= 0 and length >= 0");
  const fs::path path = path_of(sha256);
  // A fresh fd per read: the broker keeps no fds open between chunks of a fetch.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    return make_error(ErrorCode::kArtifactNotFound, "artifact " + std::string(sha256) + " is not in the store");
  }
  if (fd < 0) return errno_error("open", path.native(), errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return errno_error("fstat", path.native(), err);
  }
  if (offset > st.st_size) {
    ::close(fd);
    return make_error(ErrorCode::kInvalidArgument, "artifact read at offset " + std::to_string(offset) +
                                                       " is beyond its size of " + std::to_string(st.st_size));
  }
  const auto want = static_cast<std::size_t>(
      std::min({static_cast<std::int64_t>(out.size()), kMaxReadBytes, static_cast<std::int64_t>(st.st_size) - offset}));
  std::size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd, out.data() + got, want - got, offset + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return errno_error("pread", path.native(), err);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return got;
}

Result<std::int64_t> Cas::size_of(std::string_view sha256) const {
  if (!hash::is_sha256_hex(sha256)) return invalid_sha(sha256);
  const fs::path path = path_of(sha256);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return make_error(ErrorCode::kArtifactNotFound, "artifact " + std::string(sha256) + " is not in the store");
    }
    return errno_error("stat", path.native(), errno);
  }
  return static_cast<std::int64_t>(st.st_size);
}

}  // namespace kbfleet::broker
