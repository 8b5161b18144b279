#include "worker/sandbox/net_rules.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <memory>

#include "common/permissions/net_allow.hpp"

namespace kbfleet::worker {
namespace {

std::string ipv4_text(std::uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN] = {0};
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::uint32_t network_of(std::uint32_t address, int prefix) {
  return prefix == 0 ? 0 : address & (~std::uint32_t{0} << (32 - prefix));
}

}  // namespace

std::string NetRule::text() const {
  std::string s = ipv4_text(address);
  if (prefix != 32) s += "/" + std::to_string(prefix);
  if (port != 0) s += ":" + std::to_string(port);
  return s;
}

Result<std::vector<NetRule>> resolve_allow(const std::vector<std::string>& allow) {
  std::vector<NetRule> rules;
  for (const auto& text : allow) {
    auto e = permissions::parse_allow_entry(text);
    if (!e) {
      e.error().message = "permissions.net.allow entry " + e.error().message;
      return tl::unexpected(e.error());
    }
    if (!e->is_name) {
      rules.push_back({network_of(e->address, e->prefix), e->prefix, e->port});
      continue;
    }
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    int rc = ::getaddrinfo(e->host.c_str(), nullptr, &hints, &found);
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);
    if (rc != 0 || found == nullptr) {
      return make_error(ErrorCode::kSandboxUnavailable,
                        "permissions.net.allow entry '" + text + "': the worker cannot resolve " + e->host + " (" +
                            ::gai_strerror(rc) + "); fix the name or the worker's DNS, or list the address",
                        {{"entry", text}, {"layer", "netallow"}});
    }
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
      NetRule r{ntohl(sin->sin_addr.s_addr), 32, e->port};
      bool seen = false;
      for (const auto& have : rules) seen = seen || (have.address == r.address && have.prefix == 32 && have.port == r.port);
      if (!seen) rules.push_back(r);
    }
  }
  return rules;
}

std::string nft_ruleset(const std::vector<NetRule>& rules) {
  // `flush ruleset` first: the namespace is the slot's, reused task after task, and one
  // transaction (nft applies a buffer atomically) replaces the previous task's rules.
  std::string s =
      "flush ruleset\n"
      "table inet kbfleet {\n"
      "  chain output {\n"
      "    type filter hook output priority 0; policy drop;\n"
      "    oif \"lo\" accept\n"
      "    ct state established,related accept\n";
  for (const auto& r : rules) {
    std::string dst = "ip daddr " + ipv4_text(r.address) + (r.prefix != 32 ? "/" + std::to_string(r.prefix) : "");
    if (r.port == 0) {
      s += "    " + dst + " meta l4proto { tcp, udp } accept\n";
    } else {
      s += "    " + dst + " tcp dport " + std::to_string(r.port) + " accept\n";
      s += "    " + dst + " udp dport " + std::to_string(r.port) + " accept\n";
    }
  }
  // Refused rather than dropped, so a connect() fails at once (EHOSTUNREACH for TCP) instead of
  // hanging in SYN retries; the policy drops whatever cannot be answered.
  s += "    reject with icmpx type admin-prohibited\n";
  s +=
      "  }\n"
      "  chain input {\n"
      "    type filter hook input priority 0; policy drop;\n"
      "    iif \"lo\" accept\n"
      "    ct state established,related accept\n"
      "  }\n"
      "}\n";
  return s;
}

}  // namespace kbfleet::worker
