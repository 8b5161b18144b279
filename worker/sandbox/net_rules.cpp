#include "worker/sandbox/net_rules.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <memory>

namespace kbfleet::worker {
namespace {

Error bad_entry(const std::string& entry, const std::string& why) {
  return Error{ErrorCode::kInvalidArgument,
               "permissions.net.allow entry '" + entry + "': " + why +
                   " (forms: 10.1.2.3:443, 10.0.0.0/8, 10.0.0.0/8:5432, name.example:8080)",
               {{"entry", entry}}};
}

bool parse_int(std::string_view s, int lo, int hi, int& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && out >= lo && out <= hi;
}

bool parse_ipv4(const std::string& s, std::uint32_t& out) {
  in_addr a{};
  if (::inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  out = ntohl(a.s_addr);
  return true;
}

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

Result<AllowEntry> parse_allow_entry(const std::string& entry) {
  if (entry.find('[') != std::string::npos || std::count(entry.begin(), entry.end(), ':') > 1) {
    return make_error(ErrorCode::kNotSupported,
                      "permissions.net.allow entry '" + entry + "' is IPv6; tasks get IPv4 only (use an IPv4 address or name)",
                      {{"entry", entry}});
  }
  AllowEntry e;
  std::string rest = entry;
  if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    if (!parse_int(std::string_view(rest).substr(colon + 1), 1, 65535, e.port)) return tl::unexpected(bad_entry(entry, "the port must be 1-65535"));
    rest.resize(colon);
  }
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    if (!parse_int(std::string_view(rest).substr(slash + 1), 0, 32, e.prefix)) return tl::unexpected(bad_entry(entry, "the prefix must be 0-32"));
    rest.resize(slash);
  }
  if (rest.empty()) return tl::unexpected(bad_entry(entry, "no address"));
  std::uint32_t ignored = 0;
  if (!parse_ipv4(rest, ignored)) {
    const bool name_chars = rest.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == std::string::npos;
    if (!name_chars || e.prefix != 32 || entry.find('/') != std::string::npos) return tl::unexpected(bad_entry(entry, "not an IPv4 address, CIDR or host name"));
    if (e.port == 0) return tl::unexpected(bad_entry(entry, "a host name needs a port"));
    e.is_name = true;
  }
  e.host = std::move(rest);
  return e;
}

Result<std::vector<NetRule>> resolve_allow(const std::vector<std::string>& allow) {
  std::vector<NetRule> rules;
  for (const auto& text : allow) {
    auto e = parse_allow_entry(text);
    if (!e) return tl::unexpected(e.error());
    if (!e->is_name) {
      std::uint32_t address = 0;
      parse_ipv4(e->host, address);
      rules.push_back({network_of(address, e->prefix), e->prefix, e->port});
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
