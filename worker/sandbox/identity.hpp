#pragma once
// Who a sandboxed task is: an unprivileged host uid/gid of its own per worker slot (base + slot),
// never the worker's, so concurrent tasks cannot signal, ptrace or read each other and none of
// them holds root. Each slot has a user namespace mapping uid/gid 1000 inside to that host pair;
// the launched child joins it with setns() after building its root, so inside the sandbox the
// handler is uid 1000 with no capability anywhere. Requires a root worker (to map other uids and
// to enter the namespaces); created once per slot, so a spawn costs one setns().
//
// Each slot also has an empty network namespace (no interface, loopback down) that its tasks join
// for `net: none`: creating one per task costs a millisecond, joining one a few microseconds. It
// is owned by the host's user namespace, so no task can configure it, and what a task could leave
// in it (sockets) dies with the task's processes.
#include <sys/types.h>

#include <map>
#include <memory>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"

namespace kbfleet::worker {

struct SlotIdentity {
  uid_t host_uid;
  gid_t host_gid;
  int userns_fd;  // owned by SlotIdentities
  int netns_fd;   // owned by SlotIdentities
  static constexpr uid_t kInsideUid = 1000;
  static constexpr gid_t kInsideGid = 1000;
};

class SlotIdentities {
 public:
  // Host ids base, base+1, ... (uid and gid alike). Creates the namespaces of slots [0, precreate)
  // now; later slots on first use. SANDBOX_UNAVAILABLE if the worker cannot create them.
  [[nodiscard]] static Result<std::shared_ptr<SlotIdentities>> create(std::uint32_t base, int precreate);

  [[nodiscard]] Result<SlotIdentity> get(int slot);
  std::uint32_t base() const { return base_; }

 private:
  explicit SlotIdentities(std::uint32_t base) : base_(base) {}
  std::uint32_t base_;
  std::map<int, posix::Fd> userns_;
  std::map<int, posix::Fd> netns_;
};

}  // namespace kbfleet::worker
