#pragma once
// SHA-256 on a thread of its own, so hashing a stream overlaps the caller's other work on it
// (writing it to a file, sending it): at ~1.5 GB/s SHA-256 is as slow as a page-cache copy, and
// done in turn with it, it halved a transfer. The caller keeps each buffer it queues alive and
// unchanged until wait_hashed() says it was hashed.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "common/errors/error.hpp"
#include "common/hash/sha256.hpp"

namespace kbfleet::hash {

class BackgroundSha256 {
 public:
  // Starts the thread; INTERNAL if it cannot be created.
  [[nodiscard]] static Result<std::unique_ptr<BackgroundSha256>> start();
  ~BackgroundSha256();  // stops after the buffer in progress (the digest is then lost)
  BackgroundSha256(const BackgroundSha256&) = delete;
  BackgroundSha256& operator=(const BackgroundSha256&) = delete;

  // Queues `bytes` (borrowed until hashed) and returns its number: 1 for the first, 2, ...
  std::uint64_t update(std::span<const char> bytes);
  // Blocks until the first `n` buffers are hashed.
  void wait_hashed(std::uint64_t n);
  // Whether the first `n` buffers are hashed; does not block.
  bool is_hashed(std::uint64_t n);
  // Waits for every queued buffer and returns the lowercase hex digest; update() must not be
  // called afterwards.
  std::string hex_digest();

 private:
  BackgroundSha256() = default;
  void run();

  std::mutex mu_;
  std::condition_variable queued_cv_;  // the thread waits for work
  std::condition_variable hashed_cv_;  // callers wait for progress
  std::deque<std::span<const char>> queue_;
  std::uint64_t queued_ = 0;
  std::uint64_t hashed_ = 0;
  bool stop_ = false;
  Sha256 sha_;  // the thread's only
  std::thread thread_;
};

}  // namespace kbfleet::hash
