// The allow-list file (broker/auth/allow_list.hpp).
#include <catch2/catch.hpp>

#include "broker/auth/allow_list.hpp"
#include "common/security/cert.hpp"
#include "tests/support/process.hpp"

using namespace kbfleet;
using namespace kbfleet::broker;

TEST_CASE("an allow-list maps keys to tenant and role and holds tenant policies", "[broker][auth]") {
  auto a = *security::generate_keypair();
  auto w = *security::generate_keypair();
  auto dir = test::make_temp_dir();
  auto c = *security::generate_keypair();
  REQUIRE(security::write_certificates(dir + "/carol", c));
  const std::string text = "# comment\n"
                           "tenant acme plugins=hello,build max_queued=10 max_running=2 rate=5 burst=7\n"
                           "\n" +
                           a.public_key + " acme client   # alice\n" + w.public_key + " fleet worker\n" +
                           "@carol.pub beta admin\n";
  auto list = AllowList::parse(text, "allow.txt", dir);
  REQUIRE(list);
  CHECK(list->size() == 3);
  REQUIRE(list->find(a.public_key));
  CHECK(list->find(a.public_key)->to_string() == "acme/client");
  CHECK(list->find(w.public_key)->role == Role::kWorker);
  CHECK(list->find(c.public_key)->to_string() == "beta/admin");
  CHECK(list->find("x") == nullptr);
  const auto& p = list->policy("acme");
  CHECK(p.allows_plugin("hello"));
  CHECK_FALSE(p.allows_plugin("chatty"));
  CHECK(p.max_queued == 10);
  CHECK(p.max_running == 2);
  CHECK(p.rate == 5);
  CHECK(p.burst == 7);
  CHECK(list->policy("beta").allows_plugin("anything"));  // no tenant line: everything, no limits
  CHECK(list->policy("beta").max_queued == 0);
  test::remove_tree(dir);
}

TEST_CASE("a bad allow-list line is refused naming the file and line", "[broker][auth]") {
  auto k = security::generate_keypair()->public_key;
  auto bad = [&](const std::string& text, const std::string& expect) {
    auto r = AllowList::parse(text, "allow.txt", ".");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::StartsWith("allow.txt:2: ") && Catch::Contains(expect));
  };
  bad("\nnotakey acme client\n", "40-character Z85");
  bad("\n" + k + " acme root\n", "role 'root'");
  bad("\n" + k + " Acme! client\n", "tenant 'Acme!'");
  bad("\n" + k + " acme\n", "KEY TENANT ROLE");
  bad(k + " a client\n" + k + " b client\n", "listed twice");
  bad("\ntenant acme max_queued=-1\n", "non-negative integer");
  bad("\ntenant acme colour=red\n", "unknown tenant setting");
  bad("\n@missing.pub acme client\n", "missing.pub");
}
