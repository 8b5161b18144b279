// TaskQueue: priority then FIFO per key, the best head across keys, lazy removal of stale ids
// (broker/queue/task_queue.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "broker/queue/task_queue.hpp"

namespace kbfleet::broker {
namespace {

// Readable task names for the tests: up to 16 characters packed into a TaskKey and back.
TaskKey k(std::string_view name) {
  REQUIRE(name.size() <= sizeof(TaskKey));
  TaskKey key;
  char bytes[sizeof(TaskKey)] = {};
  std::memcpy(bytes, name.data(), name.size());
  std::memcpy(&key.hi, bytes, 8);
  std::memcpy(&key.lo, bytes + 8, 8);
  return key;
}

std::string name(const TaskKey& key) {
  char bytes[sizeof(TaskKey) + 1] = {};
  std::memcpy(bytes, &key.hi, 8);
  std::memcpy(bytes + 8, &key.lo, 8);
  return bytes;
}

std::optional<std::string> name(const std::optional<TaskKey>& key) {
  if (!key) return std::nullopt;
  return name(*key);
}

std::vector<std::string> names(const std::vector<TaskKey>& keys) {
  std::vector<std::string> out;
  for (const auto& key : keys) out.push_back(name(key));
  return out;
}

bool always_alive(const TaskKey&) { return true; }

std::vector<std::string> drain(TaskQueue& q, const std::vector<std::string>& keys) {
  std::vector<std::string> out;
  while (auto id = q.pop_best(keys, always_alive)) out.push_back(name(*id));
  return out;
}

}  // namespace

TEST_CASE("queue keys are plugin@version with an empty version meaning any", "[broker][queue]") {
  CHECK(queue_key("hello", "") == "hello@");
  CHECK(queue_key("hello", "1.0.0") == "hello@1.0.0");
}

TEST_CASE("tasks leave one key by priority, then in submission order", "[broker][queue]") {
  TaskQueue q;
  q.push("k", 0, k("a"));
  q.push("k", 5, k("b"));
  q.push("k", 0, k("c"));
  q.push("k", 5, k("d"));
  q.push("k", -2, k("e"));
  q.push("k", 0, k("f"));
  CHECK(q.size() == 6);
  CHECK(drain(q, {"k"}) == std::vector<std::string>{"b", "d", "a", "c", "f", "e"});
  CHECK(q.size() == 0);
  CHECK(q.empty_for("k"));
}

TEST_CASE("equal priorities keep FIFO order over many tasks", "[broker][queue]") {
  TaskQueue q;
  std::vector<std::string> expected;
  for (int i = 0; i < 1000; ++i) {
    expected.push_back("t" + std::to_string(i));
    q.push("k", 1, k(expected.back()));
  }
  CHECK(drain(q, {"k"}) == expected);
}

TEST_CASE("pop_best picks the best head across several keys", "[broker][queue]") {
  TaskQueue q;
  q.push("hello@", 1, k("any-1"));
  q.push("hello@1.0", 3, k("v1-hi"));
  q.push("other@", 9, k("other"));
  q.push("hello@", 3, k("any-hi"));  // same priority as v1-hi but later

  SECTION("higher priority first, then the earlier submission across keys") {
    CHECK(drain(q, {"hello@", "hello@1.0"}) == std::vector<std::string>{"v1-hi", "any-hi", "any-1"});
    CHECK(q.size() == 1);
    CHECK_FALSE(q.empty_for("other@"));
  }
  SECTION("the order of the keys does not matter") {
    CHECK(drain(q, {"hello@1.0", "hello@"}) == std::vector<std::string>{"v1-hi", "any-hi", "any-1"});
  }
  SECTION("keys a worker does not serve are never popped") {
    CHECK(drain(q, {"hello@2.0", "missing@"}).empty());
    CHECK(q.size() == 4);
  }
  SECTION("no keys pops nothing") {
    CHECK_FALSE(q.pop_best({}, always_alive).has_value());
  }
}

TEST_CASE("stale entries are skipped and dropped from the size", "[broker][queue]") {
  TaskQueue q;
  q.push("k", 9, k("cancelled-1"));
  q.push("k", 1, k("live"));
  q.push("k", 9, k("cancelled-2"));
  q.push("j", 5, k("cancelled-3"));
  const std::set<std::string> gone{"cancelled-1", "cancelled-2", "cancelled-3"};
  std::vector<std::string> asked;
  auto alive = [&](const TaskKey& id) {
    asked.push_back(name(id));
    return gone.count(name(id)) == 0;
  };
  CHECK(q.size() == 4);  // cancelled entries count until discarded
  auto id = q.pop_best({"k", "j"}, alive);
  REQUIRE(id.has_value());
  CHECK(name(*id) == "live");
  CHECK(q.size() == 0);
  CHECK(q.empty_for("k"));
  CHECK(q.empty_for("j"));
  CHECK_FALSE(q.pop_best({"k", "j"}, alive).has_value());

  SECTION("a key holding only stale entries yields nothing") {
    TaskQueue only_stale;
    only_stale.push("k", 0, k("cancelled-1"));
    CHECK_FALSE(only_stale.pop_best({"k"}, alive).has_value());
    CHECK(only_stale.size() == 0);
  }
}

TEST_CASE("an unknown key is empty", "[broker][queue]") {
  TaskQueue q;
  CHECK(q.empty_for("nothing@"));
  q.push("a@", 0, k("x"));
  CHECK_FALSE(q.empty_for("a@"));
  CHECK(q.empty_for("a@1"));
}

}  // namespace kbfleet::broker

namespace kbfleet::broker {

TEST_CASE("take_if removes matching ids of one key and keeps the order of the rest", "[broker][queue]") {
  TaskQueue q;
  q.push("k", 0, k("a"));
  q.push("k", 5, k("b"));
  q.push("k", 0, k("c"));
  q.push("other", 0, k("x"));
  auto taken = names(q.take_if("k", [](const TaskKey& id) { return name(id) != "c"; }));
  CHECK(std::set<std::string>(taken.begin(), taken.end()) == std::set<std::string>{"a", "b"});
  CHECK(q.size() == 2);
  CHECK(q.keys().size() == 2);
  CHECK(q.take_if("none", always_alive).empty());
  CHECK(names(q.take_if("k", always_alive)) == std::vector<std::string>{"c"});
  CHECK(q.keys() == std::vector<std::string>{"other"});
  CHECK(drain(q, {"k", "other"}) == std::vector<std::string>{"x"});
}

TEST_CASE("issue 7: one tenant's 100000 queued tasks do not starve another tenant's single task",
          "[broker][queue][fairness]") {
  TaskQueue q;
  for (int i = 0; i < 100000; ++i) q.push("hello@", 0, k("a" + std::to_string(i)), "flood");
  q.push("hello@", 0, k("b0"), "quiet");
  // The flood's first task goes first (it was queued first), the quiet tenant's next.
  auto first = q.pop_best({"hello@"}, always_alive);
  auto second = q.pop_best({"hello@"}, always_alive);
  REQUIRE(first);
  REQUIRE(second);
  CHECK(name(*first) == "a0");
  CHECK(name(*second) == "b0");
  CHECK(q.size() == 99999);
}

TEST_CASE("tenants are served round robin, each in its own priority order", "[broker][queue][fairness]") {
  TaskQueue q;
  q.push("k", 0, k("a1"), "A");
  q.push("k", 9, k("a2"), "A");
  q.push("k", 0, k("a3"), "A");
  q.push("k", 0, k("b1"), "B");
  q.push("k2", 0, k("c1"), "C");  // another key: also in the rotation for a worker serving both
  q.push("k", 0, k("b2"), "B");
  CHECK(drain(q, {"k", "k2"}) == std::vector<std::string>{"a2", "b1", "c1", "a1", "b2", "a3"});
  CHECK(q.size() == 0);
  CHECK(q.empty_for("k"));
  CHECK(q.keys().empty());
}

TEST_CASE("a flooding tenant on one plugin does not starve another tenant's task on a second plugin",
          "[broker][queue][fairness]") {
  TaskQueue q;
  for (int i = 0; i < 1000; ++i) q.push("build@", 100, k("a" + std::to_string(i)), "flood");
  q.push("hello@", 0, k("b0"), "quiet");  // lower priority, later, different key
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) got.push_back(name(*q.pop_best({"build@", "hello@"}, always_alive)));
  CHECK(std::find(got.begin(), got.end(), "b0") != got.end());
}

TEST_CASE("a tenant that may not start more tasks is skipped, not blocking the others", "[broker][queue][fairness]") {
  TaskQueue q;
  q.push("k", 0, k("a1"), "A");
  q.push("k", 0, k("a2"), "A");
  q.push("k", 0, k("b1"), "B");
  auto not_a = [](const std::string& tenant) { return tenant != "A"; };
  CHECK(name(q.pop_best({"k"}, always_alive, not_a)) == std::optional<std::string>("b1"));
  CHECK_FALSE(q.pop_best({"k"}, always_alive, not_a));
  CHECK(q.size() == 2);
  CHECK(name(q.pop_best({"k"}, always_alive)) == std::optional<std::string>("a1"));
}

TEST_CASE("stale entries of one tenant are discarded and the next tenant is served", "[broker][queue][fairness]") {
  TaskQueue q;
  q.push("k", 0, k("gone1"), "A");
  q.push("k", 0, k("gone2"), "A");
  q.push("k", 0, k("b1"), "B");
  auto alive = [](const TaskKey& id) { return name(id).rfind("gone", 0) != 0; };
  CHECK(name(q.pop_best({"k"}, alive)) == std::optional<std::string>("b1"));
  CHECK(q.size() == 0);
  CHECK(q.empty_for("k"));
  q.push("k", 0, k("a3"), "A");  // tenant A comes back after its entries were all discarded
  CHECK(name(q.pop_best({"k"}, alive)) == std::optional<std::string>("a3"));
}

}  // namespace kbfleet::broker

namespace kbfleet::broker {

// Emptied keys, levels and tenants are kept for reuse (task_queue.hpp): a queue that drains and
// fills again, the usual state when workers keep up, must behave as a fresh one.
TEST_CASE("a queue that drains and fills again keeps priority, FIFO and tenant order", "[broker][queue]") {
  TaskQueue q;
  q.push("k", 5, k("first"));
  CHECK(drain(q, {"k"}) == std::vector<std::string>{"first"});
  CHECK(q.empty_for("k"));
  CHECK(q.keys().empty());
  // The emptied level (priority 5) is reused for another priority: order must follow the new one.
  q.push("k", 1, k("low"));
  q.push("k", 3, k("high"));
  q.push("k", 1, k("low2"));
  CHECK_FALSE(q.empty_for("k"));
  CHECK(q.keys() == std::vector<std::string>{"k"});
  CHECK(drain(q, {"k"}) == std::vector<std::string>{"high", "low", "low2"});
  // Tenants that emptied come back in round-robin order.
  q.push("k", 0, k("a1"), "A");
  q.push("k", 0, k("a2"), "A");
  q.push("k", 0, k("b1"), "B");
  CHECK(drain(q, {"k"}) == std::vector<std::string>{"a1", "b1", "a2"});
  q.push("k", 0, k("b2"), "B");
  q.push("k", 0, k("a3"), "A");
  CHECK(drain(q, {"k"}) == std::vector<std::string>{"b2", "a3"});
  CHECK(q.size() == 0);
}

TEST_CASE("many drained keys and tenants leave the queue empty and usable", "[broker][queue]") {
  TaskQueue q;
  std::vector<std::string> keys;
  for (int i = 0; i < 300; ++i) {  // beyond the idle entries kept
    keys.push_back("p" + std::to_string(i) + "@");
    q.push(keys.back(), 0, k("t" + std::to_string(i)), "tenant" + std::to_string(i % 150));
  }
  CHECK(drain(q, keys).size() == 300);
  CHECK(q.size() == 0);
  CHECK(q.keys().empty());
  for (const auto& key : keys) CHECK(q.empty_for(key));
  q.push(keys[7], 2, k("again"), "tenant3");
  CHECK(q.keys() == std::vector<std::string>{keys[7]});
  CHECK(name(q.pop_best({keys[7]}, always_alive)) == std::optional<std::string>("again"));
}

}  // namespace kbfleet::broker
