#pragma once
// Hash-while-send for an artifact collected without its hash (over kHashFirstMaxBytes): each
// chunk is read once, into a buffer shared by the ZeroMQ message that sends it and by a hashing
// thread, so reading, hashing and sending overlap instead of the loop hashing every chunk in turn.
// The buffer is freed by whichever of the two finishes with it last. Loop thread only.
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "common/errors/error.hpp"
#include "common/hash/background_sha256.hpp"

namespace kbfleet::worker {

class SendHasher {
 public:
  // Starts the hashing thread; INTERNAL if it cannot.
  [[nodiscard]] static Result<std::unique_ptr<SendHasher>> start();
  ~SendHasher();  // waits for the chunk being hashed (its buffer may still be in a message)

  // Reads exactly `n` bytes at `offset` of `fd` into a new buffer, queues them for hashing and
  // returns a message over the same buffer. IO_ERROR on a failed or short read (the file
  // changed). Blocks while kMaxPending earlier chunks still wait for the hashing thread.
  [[nodiscard]] Result<zmq::message_t> read_chunk(int fd, std::int64_t offset, std::size_t n);
  // The digest of every chunk read, in order (waits for the hashing thread).
  std::string hex_digest();

  static constexpr std::size_t kMaxPending = 16;

 private:
  explicit SendHasher(std::unique_ptr<hash::BackgroundSha256> h) : h_(std::move(h)) {}
  std::unique_ptr<hash::BackgroundSha256> h_;
  // Chunks queued for hashing, with their update number; each holds a reference to its buffer.
  std::deque<std::pair<std::uint64_t, std::shared_ptr<char[]>>> pending_;
};

}  // namespace kbfleet::worker
