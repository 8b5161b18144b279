#pragma once
// The network a slot's tasks get when their manifest has `net: {allow: [...]}` and the operator
// started the worker with --task-net CIDR: per slot, a network namespace (named
// kbfleet-<worker pid>-<slot>, made once at start like the empty one of identity.hpp) joined to
// the host by a veth pair on a /30 of CIDR: slot s uses the 4s-th /30, the host end has its first
// address, the task end (eth0) the second, with a default route through the host end. Before each
// task, its allow-list is loaded there as one nftables transaction (net_rules.hpp, libnftables).
//
// Reaching beyond the host (forwarding and NAT for the CIDR) is the operator's to set up, as for
// any container network; docs/sandbox.md shows the two nft commands. The worker changes nothing
// in the host's own network namespace except creating the veth ends.
//
// Requires a root worker (CAP_NET_ADMIN, CAP_SYS_ADMIN for the namespaces) and iproute2's `ip`.
// Not thread-safe: used from the worker's loop.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"
#include "worker/sandbox/net_rules.hpp"

namespace kbfleet::worker {

struct SlotAddresses {
  std::string host;  // e.g. 10.231.0.1, on the veth end in the host's namespace
  std::string task;  // e.g. 10.231.0.2, eth0 inside the slot's namespace
};

// Slot s's pair inside `cidr`, or INVALID_ARGUMENT if `cidr` is not an IPv4 CIDR with room for
// `slots` /30s. Pure.
[[nodiscard]] Result<SlotAddresses> slot_addresses(const std::string& cidr, int slot, int slots);

class SlotNetworks {
 public:
  // Removes the namespaces of workers that are gone, then makes one per slot. SANDBOX_UNAVAILABLE
  // naming the failed `ip` command and what it printed (details layer=netallow).
  [[nodiscard]] static Result<std::shared_ptr<SlotNetworks>> create(const std::string& cidr, int slots);
  ~SlotNetworks();  // deletes the namespaces (and with them the veth pairs)
  SlotNetworks(const SlotNetworks&) = delete;
  SlotNetworks& operator=(const SlotNetworks&) = delete;

  // Loads `rules` into the slot's namespace, replacing the previous task's; returns its fd
  // (borrowed, valid for this object's lifetime) for the launcher's setns. SANDBOX_UNAVAILABLE
  // with libnftables' message if the ruleset is refused.
  [[nodiscard]] Result<int> prepare(int slot, const std::vector<NetRule>& rules);
  const std::string& cidr() const { return cidr_; }
  SlotAddresses addresses(int slot) const;

 private:
  SlotNetworks(std::string cidr, int slots) : cidr_(std::move(cidr)), slots_(slots) {}
  std::string cidr_;
  int slots_;
  std::map<int, posix::Fd> netns_;  // slot -> namespace fd
  std::vector<std::string> names_;  // /run/netns names we made
};

}  // namespace kbfleet::worker
