// Net allow-lists, the pure part: which entries parse, what they resolve to, the nftables
// ruleset they become, and the per-slot addresses of --task-net. The kernel side (the rules
// loaded into a slot's namespace, a real connection allowed and another refused) is in
// tests/sandbox/net_test.cpp.
#include <catch2/catch.hpp>

#include "worker/sandbox/net_rules.hpp"
#include "worker/sandbox/net_slots.hpp"

namespace kbfleet::worker {
namespace {

std::vector<std::string> texts(const std::vector<NetRule>& rules) {
  std::vector<std::string> out;
  for (const auto& r : rules) out.push_back(r.text());
  return out;
}

TEST_CASE("allow-list entries parse as an address, a CIDR or a name, with an optional port", "[sandbox][net]") {
  auto rules = resolve_allow({"10.1.2.3:443", "10.9.8.7/8", "192.168.0.0/16:5432", "localhost:8080", "0.0.0.0/0:53"});
  REQUIRE(rules);
  // A CIDR is normalised to its network; a name becomes each IPv4 address it has (/etc/hosts here).
  CHECK(texts(*rules) == std::vector<std::string>{"10.1.2.3:443", "10.0.0.0/8", "192.168.0.0/16:5432", "127.0.0.1:8080",
                                                  "0.0.0.0/0:53"});
}

TEST_CASE("a name the worker cannot resolve is SANDBOX_UNAVAILABLE naming it", "[sandbox][net]") {
  auto r = resolve_allow({"no-such-host.invalid:443"});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ErrorCode::kSandboxUnavailable);
  CHECK(r.error().message.find("cannot resolve no-such-host.invalid") != std::string::npos);
}

TEST_CASE("the ruleset replaces the last one, accepts only the listed destinations and refuses the rest", "[sandbox][net]") {
  auto rules = resolve_allow({"10.1.2.3:443", "10.0.0.0/8"});
  REQUIRE(rules);
  const std::string s = nft_ruleset(*rules);
  CHECK(s.rfind("flush ruleset\n", 0) == 0);
  CHECK(s.find("type filter hook output priority 0; policy drop;") != std::string::npos);
  CHECK(s.find("ip daddr 10.1.2.3 tcp dport 443 accept") != std::string::npos);
  CHECK(s.find("ip daddr 10.1.2.3 udp dport 443 accept") != std::string::npos);
  CHECK(s.find("ip daddr 10.0.0.0/8 meta l4proto { tcp, udp } accept") != std::string::npos);
  // After every accept: refuse (so connect() fails at once), and let nothing in.
  CHECK(s.find("reject with icmpx type admin-prohibited") > s.find("ip daddr 10.0.0.0/8"));
  CHECK(s.find("type filter hook input priority 0; policy drop;") != std::string::npos);
  // No rule at all: only loopback and replies.
  const std::string none = nft_ruleset({});
  CHECK(none.find("ip daddr") == std::string::npos);
  CHECK(none.find("oif \"lo\" accept") != std::string::npos);
}

TEST_CASE("each slot gets its own /30 of the --task-net CIDR: host end first, task end second", "[sandbox][net]") {
  auto s0 = slot_addresses("10.231.0.0/16", 0, 4);
  REQUIRE(s0);
  CHECK(s0->host == "10.231.0.1");
  CHECK(s0->task == "10.231.0.2");
  auto s3 = slot_addresses("10.231.0.0/16", 3, 4);
  REQUIRE(s3);
  CHECK(s3->host == "10.231.0.13");
  CHECK(s3->task == "10.231.0.14");
  CHECK(slot_addresses("10.231.7.9/24", 1, 2)->host == "10.231.7.5");  // the network, not the address given
  for (const auto& [cidr, slots, why] : std::vector<std::tuple<std::string, int, std::string>>{
           {"10.231.0.0/30", 2, "too small for 2 slots"},
           {"10.231.0.0/31", 1, "the prefix must be 8-30"},
           {"10.231.0.0", 1, "not a CIDR"},
           {"fd00::/64", 1, "not an IPv4 address"}}) {
    INFO(cidr);
    auto r = slot_addresses(cidr, 0, slots);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().message.find(why) != std::string::npos);
  }
}

}  // namespace
}  // namespace kbfleet::worker
