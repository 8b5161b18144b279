#pragma once
// BlobWriter: two background threads that append uploads' chunks to their CAS temp files and
// commit them, so the broker's poll loop only hands over each received ZeroMQ message (kept
// alive, not copied) and answers when the threads report back. Writing and hashing a chunk costs
// ~1.5 ms per MiB; on the loop that capped an upload near 400 MB/s and made every other peer wait.
// The work is a pipeline of two stages: the hashing thread checks and hashes each chunk
// (Cas::Upload::hash), then hands it to the writing thread, which writes it (Cas::Upload::write)
// while the next chunk is hashed: SHA-256 and the copy into the page cache cost about the same,
// and done in turn on one thread they were the upload's bottleneck.
//
// Each stage runs the operations of all uploads in the order they were queued, so an upload's
// chunks and its commit keep their order. Results come back through ready_fd() (an eventfd,
// readable when take() may return something) and take(). Memory stays bounded: an upload has at
// most `window` chunks queued, in either stage, or written-but-not-taken (the broker acknowledges
// a chunk only when take() returned it), each at most `chunk_bytes`.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "broker/cas/cas.hpp"
#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"

namespace kbfleet::broker {

class BlobWriter {
 public:
  enum class Op { kAppend, kCommit };
  struct Done {
    std::uint64_t upload = 0;
    Op op = Op::kAppend;
    std::int64_t received = 0;  // bytes stored after the op
    Status status;              // as Cas::Upload::append or commit returned it
  };
  struct Limits {
    std::int64_t chunk_bytes = 1 << 20;  // largest chunk append() accepts
    std::int64_t window = 8;             // chunks appended and not yet returned by take()
  };

  // One upload queued on the writer. Destroying it abandons the upload: it is dropped on the
  // thread after what was queued before it (an uncommitted temp file is removed then). Move-only;
  // must not outlive its BlobWriter. Loop thread only.
  class Handle {
   public:
    Handle() = default;
    Handle(Handle&& o) noexcept : writer_(std::exchange(o.writer_, nullptr)), id_(o.id_) {}
    Handle& operator=(Handle&& o) noexcept;
    ~Handle();
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    std::uint64_t id() const { return id_; }
    // Queues `bytes` for offset `offset` (checked on the thread, as Cas::Upload::append does).
    // INVALID_ARGUMENT if the chunk is larger than chunk_bytes, QUOTA_EXCEEDED if `window`
    // chunks are already queued or not yet taken, or after commit(); nothing is queued then.
    [[nodiscard]] Status append(std::int64_t offset, zmq::message_t bytes);
    // Queues the commit (Cas::Upload::commit(declared)); its Done says how it went. Later
    // appends are INVALID_ARGUMENT.
    void commit(std::string declared);

   private:
    friend class BlobWriter;
    Handle(BlobWriter* writer, std::uint64_t id) : writer_(writer), id_(id) {}
    void release();  // abandons the upload, if it holds one
    BlobWriter* writer_ = nullptr;
    std::uint64_t id_ = 0;
  };

  // Starts the threads. IO_ERROR if the eventfd or a thread cannot be created.
  [[nodiscard]] static Result<std::unique_ptr<BlobWriter>> start();
  // Stops the threads after the operations in progress; queued ones are dropped and uncommitted
  // uploads removed. Handles must be gone by then.
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Takes over an upload begun on the Cas (which must outlive this writer).
  Handle adopt(std::unique_ptr<Cas::Upload> blob, Limits limits);
  // Readable (POLLIN) when take() may return results; take() drains it.
  int ready_fd() const { return ready_.get(); }
  // The results finished since the last call, in the order they finished. Returning an
  // append's Done gives its window slot back.
  std::vector<Done> take();

 private:
  struct Job {
    enum class Kind { kAdopt, kAppend, kCommit, kAbandon } kind = Kind::kAppend;
    std::uint64_t upload = 0;
    std::int64_t offset = 0;
    zmq::message_t bytes;
    std::string declared;
    std::unique_ptr<Cas::Upload> blob;  // kAdopt
    Status hashed;                      // kAppend, after the hashing stage
  };
  // Loop-side state of an upload (under mu_, as take() updates it).
  struct Credit {
    Limits limits;
    std::int64_t outstanding = 0;  // appends not yet returned by take()
    bool committing = false;
  };
  using Blob = std::shared_ptr<Cas::Upload>;  // held by the table and by the stage using it

  explicit BlobWriter(posix::Fd ready) : ready_(std::move(ready)) {}
  void push(Job job);
  void hash_stage();                 // the hashing thread
  void write_stage();                // the writing thread
  Done execute(Job& job);            // one job of the writing stage; no lock held
  void finish(Done done);            // publishes a result and wakes the loop
  Blob find(std::uint64_t upload);   // nullptr if the upload ended

  posix::Fd ready_;  // eventfd
  std::mutex mu_;
  std::condition_variable wake_hash_;
  std::condition_variable wake_write_;
  std::deque<Job> jobs_;    // for the hashing stage
  std::deque<Job> writes_;  // hashed, for the writing stage
  std::vector<Done> done_;
  std::unordered_map<std::uint64_t, Credit> credit_;
  bool stop_ = false;
  std::uint64_t next_id_ = 1;
  // The uploads being written: added by the hashing stage (kAdopt), removed by the writing stage
  // when one ends. Under mu_; each stage works on its own reference, outside the lock.
  std::unordered_map<std::uint64_t, Blob> blobs_;
  std::thread hash_thread_;   // last: started when everything above exists
  std::thread write_thread_;
};

}  // namespace kbfleet::broker
