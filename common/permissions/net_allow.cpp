#include "common/permissions/net_allow.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <string_view>

namespace kbfleet::permissions {
namespace {

Error bad_entry(const std::string& entry, const std::string& why) {
  return Error{ErrorCode::kInvalidArgument,
               "'" + entry + "': " + why + " (forms: 10.1.2.3:443, 10.0.0.0/8, 10.0.0.0/8:5432, name.example:8080)",
               {{"entry", entry}}};
}

bool parse_int(std::string_view s, int lo, int hi, int& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && out >= lo && out <= hi;
}

}  // namespace

Result<AllowEntry> parse_allow_entry(const std::string& entry) {
  if (entry.find('[') != std::string::npos || std::count(entry.begin(), entry.end(), ':') > 1) {
    return make_error(ErrorCode::kNotSupported,
                      "'" + entry + "' is IPv6; tasks get IPv4 only (use an IPv4 address or name)", {{"entry", entry}});
  }
  AllowEntry e;
  std::string rest = entry;
  if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    if (!parse_int(std::string_view(rest).substr(colon + 1), 1, 65535, e.port)) {
      return tl::unexpected(bad_entry(entry, "the port must be 1-65535"));
    }
    rest.resize(colon);
  }
  const bool has_prefix = rest.find('/') != std::string::npos;
  if (has_prefix) {
    auto slash = rest.find('/');
    if (!parse_int(std::string_view(rest).substr(slash + 1), 0, 32, e.prefix)) {
      return tl::unexpected(bad_entry(entry, "the prefix must be 0-32"));
    }
    rest.resize(slash);
  }
  if (rest.empty()) return tl::unexpected(bad_entry(entry, "no address"));
  in_addr a{};
  if (::inet_pton(AF_INET, rest.c_str(), &a) == 1) {
    e.address = ntohl(a.s_addr);
  } else {
    const bool name_chars =
        rest.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == std::string::npos;
    if (!name_chars || has_prefix) return tl::unexpected(bad_entry(entry, "not an IPv4 address, CIDR or host name"));
    if (e.port == 0) return tl::unexpected(bad_entry(entry, "a host name needs a port"));
    e.is_name = true;
  }
  e.host = std::move(rest);
  return e;
}

}  // namespace kbfleet::permissions
