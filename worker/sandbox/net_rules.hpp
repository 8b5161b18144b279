#pragma once
// What a task with `permissions.net: {allow: [...]}` may reach, as an nftables ruleset for its
// slot's network namespace (net_slots.hpp). Pure: parsing and text, no syscalls but the name
// resolution in resolve_allow().
//
// Guarantees, enforced by the kernel in the task's network namespace (tests/sandbox/net_test.cpp):
//  - a packet leaves only to an allowed address (and port, when the entry names one), over TCP
//    or UDP; everything else sent is refused in the output hook (ICMP admin-prohibited), so a
//    connect() fails at once with EHOSTUNREACH and a UDP send with EPERM;
//  - nothing can connect in (input hook: only replies to the task's own connections, and lo);
//  - the task cannot change the rules: the namespace belongs to the host's user namespace, in
//    which the task has no capability.
//
// The entries' forms are in common/permissions/net_allow.hpp; a name becomes each IPv4 address
// it resolves to when the task starts.
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

struct NetRule {
  std::uint32_t address = 0;  // host byte order
  int prefix = 32;            // 0..32
  int port = 0;               // 0 = every port
  std::string text() const;   // "10.0.0.0/8:5432"
};

// Every entry parsed (common/permissions/net_allow.hpp) and names resolved (getaddrinfo, IPv4). INVALID_ARGUMENT as above;
// NOT_SUPPORTED for IPv6; SANDBOX_UNAVAILABLE naming a host name that does not resolve.
[[nodiscard]] Result<std::vector<NetRule>> resolve_allow(const std::vector<std::string>& allow);
// The complete ruleset for one task: it replaces whatever the slot's namespace held before.
std::string nft_ruleset(const std::vector<NetRule>& rules);

}  // namespace kbfleet::worker
