#include "worker/executor/ns_hold.hpp"

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace kbfleet::worker {
namespace {

// One thread per process closes the fds handed to it. Never destroyed: it may still be closing
// when static destructors run at exit.
class Closer {
 public:
  static Closer* get() {
    static Closer* closer = [] {
      auto* c = new Closer;
      try {
        std::thread([c] { c->run(); }).detach();
      } catch (const std::system_error&) {
        c->inline_ = true;  // no thread: close where we are
      }
      return c;
    }();
    return closer;
  }

  void close_later(int fd) {
    if (inline_) {
      ::close(fd);
      return;
    }
    {
      std::lock_guard lock(mu_);
      fds_.push_back(fd);
    }
    cv_.notify_one();
  }

 private:
  [[noreturn]] void run() {
    for (;;) {
      std::vector<int> batch;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return !fds_.empty(); });
        batch.swap(fds_);
      }
      for (int fd : batch) ::close(fd);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> fds_;
  bool inline_ = false;
};

}  // namespace

NsHold& NsHold::operator=(NsHold&& other) noexcept {
  if (this != &other) {
    NsHold dropped(std::move(*this));
    ns_ = std::move(other.ns_);
  }
  return *this;
}

NsHold::~NsHold() {
  if (ns_) Closer::get()->close_later(ns_.release());
}

}  // namespace kbfleet::worker
