// anchors_of(): which top-level directories a task's plugin root and workspace need a scaffold
// on inside the root template (mounts.hpp). Pure: no mounts.
#include <catch2/catch.hpp>

#include "worker/sandbox/mounts.hpp"

namespace kbfleet::worker {
namespace {

TEST_CASE("a task's paths under /var and /srv get one scaffold each, under /tmp and /usr none", "[sandbox][mounts]") {
  SECTION("two paths under one top-level directory share its scaffold") {
    auto a = anchors_of({{"/var/lib/kbfleet/plugins/p/1.0"}, "/var/lib/kbfleet/work/t-1", 64});
    REQUIRE(a);
    CHECK(*a == std::vector<std::string>{"var"});
  }
  SECTION("different top-level directories are sorted") {
    auto a = anchors_of({{"/srv/plugins/p"}, "/var/lib/kbfleet/work/t-1", 64});
    REQUIRE(a);
    CHECK(*a == std::vector<std::string>{"srv", "var"});
  }
  SECTION("the fresh /tmp and the bound system directories are mount points already") {
    auto a = anchors_of({{"/usr/lib/kbfleet/plugins/p"}, "/tmp/kbfleet/work/t-1", 64});
    REQUIRE(a);
    CHECK(a->empty());
  }
}

TEST_CASE("a plugin root or workspace under /etc, /dev or /proc, or a relative one, is refused", "[sandbox][mounts]") {
  for (const char* bad : {"/etc/kbfleet/plugins/p", "/dev/kbfleet", "/proc/1"}) {
    auto a = anchors_of({{bad}, "/var/lib/kbfleet/work/t-1", 64});
    REQUIRE_FALSE(a);
    CHECK(a.error().code == ErrorCode::kInvalidArgument);
    CHECK(a.error().message.find("cannot bind") != std::string::npos);
  }
  auto rel = anchors_of({{"/var/p"}, "work/t-1", 64});
  REQUIRE_FALSE(rel);
  CHECK(rel.error().message == "sandbox path must be absolute: work/t-1");
}

}  // namespace
}  // namespace kbfleet::worker
