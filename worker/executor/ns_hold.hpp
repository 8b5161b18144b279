#pragma once
// NsHold: the worker's reference to a finished task's mount namespace. A namespace's last
// reference tears it down: every mount unmounted, then an RCU grace period waited for
// (namespace_unlock), then the fresh superblocks killed, which costs milliseconds on a loaded
// machine. Held here, that happens when the NsHold is destroyed, on a background thread, and not
// in the task's exit (where it delayed the worker's reaping and so the task's result).
//
// Thread-safe: destroy an NsHold on any thread.
#include "common/posix/fd.hpp"

namespace kbfleet::worker {

class NsHold {
 public:
  NsHold() = default;
  explicit NsHold(posix::Fd ns) : ns_(std::move(ns)) {}
  NsHold(NsHold&&) noexcept = default;
  NsHold& operator=(NsHold&& other) noexcept;
  NsHold(const NsHold&) = delete;
  NsHold& operator=(const NsHold&) = delete;
  ~NsHold();

  explicit operator bool() const { return static_cast<bool>(ns_); }

 private:
  posix::Fd ns_;
};

}  // namespace kbfleet::worker
