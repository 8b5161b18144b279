// Net allow-list entries as a manifest states them: what parses, and the message a bad one gets.
#include <catch2/catch.hpp>

#include "common/permissions/net_allow.hpp"

namespace kbfleet {
namespace {

TEST_CASE("allow-list entries give their address, prefix and port", "[permissions][net]") {
  auto one = permissions::parse_allow_entry("10.1.2.3:443");
  REQUIRE(one);
  CHECK(one->address == 0x0a010203u);
  CHECK(one->prefix == 32);
  CHECK(one->port == 443);
  CHECK_FALSE(one->is_name);
  auto cidr = permissions::parse_allow_entry("192.168.0.0/16");
  REQUIRE(cidr);
  CHECK(cidr->prefix == 16);
  CHECK(cidr->port == 0);
  auto name = permissions::parse_allow_entry("cache.build-farm.local:8080");
  REQUIRE(name);
  CHECK(name->is_name);
  CHECK(name->host == "cache.build-farm.local");
  CHECK(name->port == 8080);
}

TEST_CASE("bad allow-list entries are refused with a message naming the entry and the forms", "[permissions][net]") {
  for (const auto& [entry, why] : std::vector<std::pair<std::string, std::string>>{
           {"10.1.2.3:0", "the port must be 1-65535"},
           {"10.1.2.3:70000", "the port must be 1-65535"},
           {"10.1.2.3:http", "the port must be 1-65535"},
           {"10.0.0.0/33", "the prefix must be 0-32"},
           {"cache.local", "a host name needs a port"},
           {"cache.local/24:80", "not an IPv4 address, CIDR or host name"},
           {"bad_name!:80", "not an IPv4 address, CIDR or host name"},
           {":80", "no address"},
       }) {
    INFO(entry);
    auto e = permissions::parse_allow_entry(entry);
    REQUIRE_FALSE(e);
    CHECK(e.error().code == ErrorCode::kInvalidArgument);
    CHECK(e.error().message.find("'" + entry + "': " + why) != std::string::npos);
    CHECK(e.error().message.find("forms: 10.1.2.3:443") != std::string::npos);
  }
  for (const std::string v6 : {"[::1]:80", "fd00::/8", "::1"}) {
    INFO(v6);
    auto e = permissions::parse_allow_entry(v6);
    REQUIRE_FALSE(e);
    CHECK(e.error().code == ErrorCode::kNotSupported);
  }
}

}  // namespace
}  // namespace kbfleet
