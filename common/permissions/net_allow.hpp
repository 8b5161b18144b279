#pragma once
// One entry of a manifest's `permissions.net.allow` list, parsed (pure: no syscalls, no name
// resolution). The manifest parser uses it to refuse a bad entry at load time
// (MANIFEST_INVALID naming it); the worker's sandbox resolves names and turns entries into
// nftables rules when a task starts (worker/sandbox/net_rules.hpp).
//
// Forms (IPv4; IPv6 is NOT_SUPPORTED rather than left open):
//   "10.1.2.3:443"      one address, one port (TCP and UDP)
//   "10.0.0.0/8"        a CIDR, every port
//   "10.0.0.0/8:5432"   a CIDR, one port
//   "cache.local:8080"  a host name (resolved when the task starts); a name needs a port
#include <cstdint>
#include <string>

#include "common/errors/error.hpp"

namespace kbfleet::permissions {

struct AllowEntry {
  std::string host;  // an IPv4 address (a CIDR's address as written), or a name
  std::uint32_t address = 0;  // host byte order, when !is_name
  int prefix = 32;
  int port = 0;  // 0 = every port
  bool is_name = false;
};

// INVALID_ARGUMENT saying what is wrong and listing the forms (bad port, bad prefix, a name
// without a port, not an address or name); NOT_SUPPORTED for IPv6.
[[nodiscard]] Result<AllowEntry> parse_allow_entry(const std::string& entry);

}  // namespace kbfleet::permissions
