#include "common/hash/background_sha256.hpp"

#include <system_error>

namespace kbfleet::hash {

Result<std::unique_ptr<BackgroundSha256>> BackgroundSha256::start() {
  std::unique_ptr<BackgroundSha256> h(new BackgroundSha256());
  try {
    h->thread_ = std::thread([raw = h.get()] { raw->run(); });
  } catch (const std::system_error& e) {
    return make_error(ErrorCode::kInternal, std::string("cannot start a hashing thread: ") + e.what());
  }
  return h;
}

BackgroundSha256::~BackgroundSha256() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  queued_cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t BackgroundSha256::update(std::span<const char> bytes) {
  std::uint64_t n;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(bytes);
    n = ++queued_;
  }
  queued_cv_.notify_one();
  return n;
}

void BackgroundSha256::wait_hashed(std::uint64_t n) {
  std::unique_lock lock(mu_);
  hashed_cv_.wait(lock, [&] { return hashed_ >= n; });
}

bool BackgroundSha256::is_hashed(std::uint64_t n) {
  std::lock_guard lock(mu_);
  return hashed_ >= n;
}

std::string BackgroundSha256::hex_digest() {
  std::uint64_t all;
  {
    std::lock_guard lock(mu_);
    all = queued_;
  }
  wait_hashed(all);
  return sha_.hex_digest();  // the thread is idle: every buffer is hashed and none will come
}

void BackgroundSha256::run() {
  for (;;) {
    std::span<const char> bytes;
    {
      std::unique_lock lock(mu_);
      queued_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      bytes = queue_.front();
      queue_.pop_front();
    }
    sha_.update(bytes.data(), bytes.size());
    {
      std::lock_guard lock(mu_);
      ++hashed_;
    }
    hashed_cv_.notify_all();
  }
}

}  // namespace kbfleet::hash
