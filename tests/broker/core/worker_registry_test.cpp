// WorkerRegistry: credit accounting, queue keys filtered by capabilities, lookups for submissions,
// silence detection with an injected clock (broker/dispatcher/worker_registry.hpp).
#include <catch2/catch.hpp>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "broker/dispatcher/worker_registry.hpp"
#include "broker/queue/task_queue.hpp"

namespace kbfleet::broker {
namespace {

using namespace std::chrono_literals;

const Clock::time_point kT0 = Clock::time_point{} + 1000s;

protocol::PluginOffer offer(std::string id, std::string version, std::vector<std::string> handlers,
                            std::vector<std::string> capabilities = {}) {
  protocol::PluginOffer p;
  p.id = std::move(id);
  p.version = std::move(version);
  p.handlers = std::move(handlers);
  p.capabilities = std::move(capabilities);
  return p;
}

protocol::PluginOffer broken_offer(std::string id) {
  protocol::PluginOffer p;
  p.id = std::move(id);
  p.error_code = "MANIFEST_INVALID";
  p.error_message = "handlers: at least one handler is required";
  return p;
}

protocol::WorkerReady ready(std::string id, std::int64_t slots, std::vector<protocol::PluginOffer> plugins,
                            std::vector<std::string> capabilities = {}) {
  protocol::WorkerReady r;
  r.worker_id = std::move(id);
  r.slots = slots;
  r.plugins = std::move(plugins);
  r.capabilities = std::move(capabilities);
  return r;
}

std::vector<std::string> ids(const std::vector<WorkerInfo*>& ws) {
  std::vector<std::string> out;
  for (auto* w : ws) out.push_back(w->routing_id);
  return out;
}

// with_credit_for into a buffer that already holds a stale entry: the call must clear it.
std::vector<WorkerInfo*> credit(WorkerRegistry& reg, const std::string& key) {
  std::vector<WorkerInfo*> out{nullptr};
  reg.with_credit_for(key, out);
  return out;
}

TaskKey task(std::uint64_t n) { return TaskKey{0, n}; }

}  // namespace

TEST_CASE("a worker's slots are credit: assign takes one, release gives it back", "[broker][dispatcher]") {
  WorkerRegistry reg;
  reg.upsert("w1", ready("w1", 2, {offer("hello", "1.0.0", {"greet"})}), kT0);
  auto* w = reg.find("w1");
  REQUIRE(w != nullptr);
  CHECK(w->free == 2);
  CHECK(reg.total_slots() == 2);

  reg.assign(*w, task(1));
  CHECK(w->free == 1);
  reg.assign(*w, task(1));  // the same task twice does not take two slots
  CHECK(w->free == 1);
  reg.assign(*w, task(2));
  CHECK(w->free == 0);
  CHECK(w->running == TaskKeySet{task(1), task(2)});
  CHECK(credit(reg, "hello@").empty());
  CHECK(reg.free_slots() == 0);

  reg.release(*w, task(99));  // not running there
  CHECK(w->free == 0);
  reg.release(*w, task(1));
  CHECK(w->free == 1);
  reg.release(*w, task(1));
  CHECK(w->free == 1);
  CHECK(ids(credit(reg, "hello@")) == std::vector<std::string>{"w1"});
}

TEST_CASE("workers with credit for a key come most free slots first", "[broker][dispatcher]") {
  WorkerRegistry reg;
  reg.upsert("a", ready("a", 1, {offer("hello", "1.0.0", {"greet"})}), kT0);
  reg.upsert("b", ready("b", 4, {offer("hello", "2.0.0", {"greet"})}), kT0);
  reg.upsert("c", ready("c", 2, {offer("other", "1", {"run"})}), kT0);
  CHECK(reg.total_slots() == 7);
  CHECK(reg.free_slots() == 7);
  CHECK(ids(credit(reg, "hello@")) == std::vector<std::string>{"b", "a"});
  CHECK(ids(credit(reg, "hello@1.0.0")) == std::vector<std::string>{"a"});
  CHECK(ids(credit(reg, "hello@2.0.0")) == std::vector<std::string>{"b"});
  CHECK(credit(reg, "hello@3.0.0").empty());
  CHECK(ids(credit(reg, "other@")) == std::vector<std::string>{"c"});
}

TEST_CASE("a plugin needing a capability the worker does not grant is not in its keys", "[broker][dispatcher]") {
  WorkerRegistry reg;
  auto plugins = std::vector{offer("fetcher", "1.0", {"get"}, {"net"}), offer("hello", "1.0", {"greet"})};
  SECTION("not granted") {
    reg.upsert("w", ready("w", 1, plugins, {"gpu"}), kT0);
    CHECK(reg.find("w")->keys == std::vector<std::string>{"hello@", "hello@1.0"});
    CHECK(credit(reg, "fetcher@").empty());
  }
  SECTION("granted") {
    reg.upsert("w", ready("w", 1, plugins, {"gpu", "net"}), kT0);
    CHECK(reg.find("w")->keys == std::vector<std::string>{"fetcher@", "fetcher@1.0", "hello@", "hello@1.0"});
    CHECK(ids(credit(reg, "fetcher@1.0")) == std::vector<std::string>{"w"});
  }
}

TEST_CASE("a broken manifest is never served but is reported by lookup", "[broker][dispatcher]") {
  WorkerRegistry reg;
  reg.upsert("w", ready("w", 1, {broken_offer("bad"), offer("hello", "1.0", {"greet"})}), kT0);
  CHECK(reg.find("w")->keys == std::vector<std::string>{"hello@", "hello@1.0"});
  auto l = reg.lookup("bad", "", "run");
  CHECK(l.any_worker);
  CHECK_FALSE(l.offered);
  CHECK(l.versions.empty());
  REQUIRE(l.broken.has_value());
  CHECK(l.broken->error_code == "MANIFEST_INVALID");

  SECTION("a valid offer elsewhere wins over the broken one") {
    reg.upsert("w2", ready("w2", 1, {offer("bad", "2.0", {"run"})}), kT0);
    auto l2 = reg.lookup("bad", "", "run");
    CHECK(l2.offered);
    CHECK(l2.versions == std::set<std::string>{"2.0"});
    CHECK(l2.broken.has_value());
  }
}

TEST_CASE("lookup reports versions and the handlers of the requested version", "[broker][dispatcher]") {
  WorkerRegistry reg;
  SECTION("no workers at all") {
    auto l = reg.lookup("hello", "", "greet");
    CHECK_FALSE(l.any_worker);
    CHECK_FALSE(l.offered);
  }
  reg.upsert("a", ready("a", 1, {offer("hello", "1.0", {"greet"})}), kT0);
  reg.upsert("b", ready("b", 1, {offer("hello", "2.0", {"greet", "shout"})}), kT0);
  SECTION("any version") {
    auto l = reg.lookup("hello", "", "greet");
    CHECK(l.any_worker);
    CHECK(l.offered);
    CHECK(l.versions == std::set<std::string>{"1.0", "2.0"});
    CHECK(l.handlers == std::set<std::string>{"greet", "shout"});
  }
  SECTION("one version") {
    auto l = reg.lookup("hello", "1.0", "greet");
    CHECK(l.offered);
    CHECK(l.handlers == std::set<std::string>{"greet"});
  }
  SECTION("a version nobody offers") {
    auto l = reg.lookup("hello", "3.0", "greet");
    CHECK_FALSE(l.offered);
    CHECK(l.versions == std::set<std::string>{"1.0", "2.0"});
    CHECK(l.handlers.empty());
  }
  SECTION("an unknown plugin") {
    auto l = reg.lookup("nope", "", "greet");
    CHECK(l.any_worker);
    CHECK_FALSE(l.offered);
    CHECK(l.versions.empty());
    CHECK_FALSE(l.broken.has_value());
  }
}

TEST_CASE("lookup does not offer a plugin whose capabilities no worker grants", "[broker][dispatcher]") {
  // The keys of such a worker exclude the plugin (previous tests): a submission waits for a
  // capable worker (NO_CAPABLE_WORKER after a while), so the lookup names what is missing and
  // still knows the handlers, to refuse a wrong handler at once.
  WorkerRegistry reg;
  reg.upsert("w", ready("w", 1, {offer("fetcher", "1.0", {"get"}, {"net"}), offer("fetcher", "2.0", {"get"}, {"gpu"})}, {}),
             kT0);
  auto l = reg.lookup("fetcher", "1.0", "get");
  CHECK(l.any_worker);
  CHECK_FALSE(l.offered);
  CHECK(l.ungranted == std::set<std::string>{"net"});  // only the requested version's
  CHECK(l.handlers == std::set<std::string>{"get"});
  CHECK(reg.lookup("fetcher", "", "get").ungranted == std::set<std::string>{"gpu", "net"});
  CHECK_FALSE(reg.serves(queue_key("fetcher", "")));
  reg.upsert("g", ready("g", 1, {offer("fetcher", "1.0", {"get"}, {"net"})}, {"net"}), kT0);
  CHECK(reg.serves(queue_key("fetcher", "1.0")));
  CHECK_FALSE(reg.serves(queue_key("fetcher", "2.0")));
}

TEST_CASE("re-announcing a worker resets its credit and returns what it ran", "[broker][dispatcher]") {
  WorkerRegistry reg;
  reg.upsert("w", ready("w", 2, {offer("hello", "1.0", {"greet"})}), kT0);
  reg.assign(*reg.find("w"), task(1));
  auto previous = reg.upsert("w", ready("w", 3, {offer("hello", "1.0", {"greet"})}), kT0 + 5s);
  CHECK(previous == TaskKeySet{task(1)});
  auto* w = reg.find("w");
  REQUIRE(w != nullptr);
  CHECK(w->free == 3);
  CHECK(w->running.empty());
  CHECK(w->last_seen == kT0 + 5s);
  CHECK(reg.all().size() == 1);

  SECTION("remove returns the running tasks and forgets the worker") {
    reg.assign(*w, task(2));
    CHECK(reg.remove("w") == TaskKeySet{task(2)});
    CHECK(reg.find("w") == nullptr);
    CHECK(reg.remove("w").empty());
    CHECK(reg.total_slots() == 0);
  }
}

TEST_CASE("workers silent since a deadline are reported, touched ones are not", "[broker][dispatcher]") {
  WorkerRegistry reg;
  reg.upsert("a", ready("a", 1, {}), kT0);
  reg.upsert("b", ready("b", 1, {}), kT0);
  reg.touch("b", kT0 + 10s);
  reg.touch("unknown", kT0 + 10s);  // no effect, no crash
  CHECK(reg.silent_since(kT0).empty());  // strictly before the deadline
  CHECK(reg.silent_since(kT0 + 1ms) == std::vector<std::string>{"a"});
  CHECK(reg.silent_since(kT0 + 11s) == std::vector<std::string>{"a", "b"});
  reg.touch("a", kT0 + 20s);
  CHECK(reg.silent_since(kT0 + 11s) == std::vector<std::string>{"b"});
}

TEST_CASE("among equally free workers the one that got a task least recently comes first", "[broker][dispatcher]") {
  WorkerRegistry reg;
  reg.upsert("a", ready("a", 2, {offer("hello", "1.0.0", {"greet"})}), kT0);
  reg.upsert("b", ready("b", 2, {offer("hello", "1.0.0", {"greet"})}), kT0);
  const std::string key = "hello@";
  // Each task finishes before the next arrives: the load must still alternate.
  std::vector<std::string> chosen;
  for (int i = 0; i < 4; ++i) {
    auto candidates = credit(reg, key);
    REQUIRE(candidates.size() == 2);
    WorkerInfo& w = *candidates.front();
    chosen.push_back(w.routing_id);
    reg.assign(w, task(static_cast<std::uint64_t>(i)));
    reg.release(w, task(static_cast<std::uint64_t>(i)));
  }
  CHECK(chosen == std::vector<std::string>{"a", "b", "a", "b"});
}

}  // namespace kbfleet::broker
