// Issue #7 on a real fleet: broker, workers and CLI as processes on loopback with CURVE on every
// socket, ZAP over an allow-list of tenants and roles (docs/security.md).
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <zmq_addon.hpp>

#include "cli/client.hpp"
#include "common/protocol/messages.hpp"
#include "common/security/cert.hpp"
#include "common/transport/curve.hpp"
#include "common/transport/frames.hpp"
#include "tests/support/fleet.hpp"

using namespace kbfleet::test;
using nlohmann::json;
namespace protocol = kbfleet::protocol;
namespace transport = kbfleet::transport;

namespace {

// Keys written by the real `kbfleet keygen`, and an allow-list over them.
struct Keys {
  std::string dir = make_temp_dir();
  Keys() {
    for (const char* name : {"broker", "alice", "bob", "ops", "w", "rogue", "asub", "mallory", "lim"}) {
      auto r = run_command({bin("kbfleet"), "keygen", dir + "/" + name}, 10s);
      REQUIRE(r.exit_code == 0);
    }
    write_allow("");
  }
  ~Keys() { remove_tree(dir); }
  std::string key(const std::string& name) const { return dir + "/" + name + ".key"; }
  std::string allow() const { return dir + "/allow.txt"; }
  void write_allow(const std::string& extra, bool with_alice = true) const {
    std::ofstream f(allow());
    f << "# tenants\n"
         "tenant lim plugins=hello max_queued=2 rate=1000\n"
         "@bob.pub beta client\n@ops.pub ops admin\n@w.pub fleet worker\n@rogue.pub fleet worker\n"
         "@asub.pub acme subscriber\n@lim.pub lim client\n"
      << (with_alice ? "@alice.pub acme client\n" : "") << extra;
  }
  std::map<std::string, std::string> as(const std::string& name) const {
    return {{"KBFLEET_KEY", key(name)}, {"KBFLEET_BROKER_KEY", dir + "/broker.pub"}};
  }
  transport::ClientKeys client_keys(const std::string& name) const {
    return *transport::load_client_keys(key(name), dir + "/broker.pub");
  }
  FleetOptions fleet(int workers = 1, int slots = 2) const {
    FleetOptions o(workers, slots);
    o.broker_args = {"--auth", allow(), "--curve-secret", key("broker")};
    o.worker_env = as("w");
    o.cli_env = as("ops");  // the admin sees every task, so fleet helpers (wait_for_*) work
    return o;
  }
};

std::string submit(const Fleet& fleet, const Keys& keys, const std::string& who, std::vector<std::string> args) {
  args.insert(args.begin(), "submit");
  auto r = fleet.cli(args, 30s, keys.as(who));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return trim(r.out);
}

// A CURVE DEALER speaking the protocol directly (to pose as a worker or replay a result).
struct RawPeer {
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  RawPeer(const std::string& endpoint, const transport::ClientKeys& keys, const std::string& id) {
    REQUIRE(transport::set_curve_client(sock, keys));
    REQUIRE(transport::connect_dealer(sock, endpoint, id));
  }
  void send(std::string_view type, const std::function<void(protocol::Writer&)>& fn) {
    protocol::Writer w;
    w.begin_map();
    fn(w);
    w.end_map();
    REQUIRE(transport::send_message(sock, "", type, w.take()));
  }
  // The next message of `type` (others are skipped), or an empty type at the deadline.
  transport::Incoming next(std::string_view type, std::chrono::milliseconds deadline = 10s) {
    auto end = std::chrono::steady_clock::now() + deadline;
    transport::Incoming in;
    while (std::chrono::steady_clock::now() < end) {
      zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 100ms);
      while (transport::recv_message(sock, transport::SocketKind::kDealer, in)) {
        if (in.type == type) return in;
      }
    }
    return {};
  }
};

}  // namespace

TEST_CASE("issue 7: a client with an unknown key, or without CURVE, is refused", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet(0));
  auto r = fleet.cli({"workers"}, 30s, keys.as("mallory"));
  CHECK(r.exit_code == 77);
  CHECK_THAT(r.err, Catch::Contains("UNAUTHENTICATED") && Catch::Contains("allow-list"));
  auto plain = fleet.cli({"--request-timeout", "1000", "workers"}, 30s, {{"KBFLEET_KEY", ""}, {"KBFLEET_BROKER_KEY", ""}});
  CHECK(plain.exit_code == 69);  // no CURVE: the handshake never completes, nothing reaches the broker
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_auth_denied_total{reason="unknown_key"})") >= 1);
  SECTION("a key file readable by others is refused before connecting (exit 78)") {
    REQUIRE(::chmod(keys.key("alice").c_str(), 0644) == 0);
    auto loose = fleet.cli({"workers"}, 30s, keys.as("alice"));
    CHECK(loose.exit_code == 78);
    CHECK_THAT(loose.err, Catch::Contains("chmod 600 " + keys.key("alice")));
  }
}

TEST_CASE("issue 7: with CURVE on every socket a known client runs a task end to end", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet());
  REQUIRE(fleet.wait_for_workers(1));
  auto r = fleet.cli({"run", "hello", "greet", "--input", R"({"name":"curve"})"}, 60s, keys.as("alice"));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("hello, curve") != std::string::npos);  // via the CURVE SUB of the events endpoint
}

TEST_CASE("issue 7: a tenant cannot read another tenant's status, events or artifacts, and an admin can",
          "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet());
  REQUIRE(fleet.wait_for_workers(1));
  const std::string id = submit(fleet, keys, "alice", {"build", "build", "--idempotency-key", "k1"});
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"status", id}, {"tail", id}, {"artifacts", "ls", id},
           {"artifacts", "get", id, "report", "-o", fleet.dir + "/stolen"}, {"cancel", id}, {"retry", id}}) {
    auto r = fleet.cli(args, 30s, keys.as("bob"));
    INFO(args[0]);
    CHECK(r.exit_code == 77);
    CHECK_THAT(r.err, Catch::Contains("FORBIDDEN") && Catch::Contains("another tenant"));
  }
  CHECK_FALSE(std::ifstream(fleet.dir + "/stolen").good());
  CHECK(fleet.cli({"artifacts", "get", id, "report", "-o", fleet.dir + "/mine"}, 30s, keys.as("alice")).exit_code == 0);
  CHECK(fleet.cli({"status", id}, 30s, keys.as("ops")).exit_code == 0);  // admin
  // Idempotency keys are per tenant: bob's "k1" is a new task of his, not alice's.
  const std::string bobs = submit(fleet, keys, "bob", {"hello", "greet", "--idempotency-key", "k1"});
  CHECK(bobs != id);
  CHECK(fleet.cli({"status", bobs}, 30s, keys.as("bob")).exit_code == 0);
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_auth_denied_total{reason="tenant"})") >= 6);
}

TEST_CASE("issue 7: a worker key cannot submit and a client key cannot act as a worker", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet(0));
  auto r = fleet.cli({"submit", "hello", "greet"}, 30s, keys.as("w"));
  CHECK(r.exit_code == 77);
  CHECK_THAT(r.err, Catch::Contains("FORBIDDEN") && Catch::Contains("fleet/worker"));
  RawPeer fake(fleet.broker, keys.client_keys("alice"), "fake-worker");
  fake.send(protocol::msg::kResult, [](protocol::Writer& w) { w.kv("req", 7).kv("task_id", std::string(32, 'a')).kv("attempt", 1); });
  auto err = fake.next(protocol::msg::kError);
  REQUIRE(err.type == "error");
  CHECK(protocol::decode_error(err.body->view()).code == kbfleet::ErrorCode::kForbidden);
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_auth_denied_total{reason="role"})") >= 2);
}

TEST_CASE("issue 7: a forged or replayed result from another worker key is refused", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet());
  REQUIRE(fleet.wait_for_workers(1));
  const std::string id = submit(fleet, keys, "alice", {"slow", "sleep", "--input", R"({"ticks":30})"});
  REQUIRE(fleet.wait_until_running(id) == "w0");
  RawPeer rogue(fleet.broker, keys.client_keys("rogue"), "rogue");
  auto forge = [&] {
    rogue.send(protocol::msg::kResult, [&](protocol::Writer& w) {
      w.kv("task_id", id).kv("attempt", 1);
      w.key("outcome").begin_map().kv("state", "failed").kv("exit_code", 1).kv("error_code", "HANDLER_FAILED");
      w.kv("error_message", "forged").end_map();
    });
    REQUIRE(rogue.next(protocol::msg::kResultAck).type == "result_ack");  // acknowledged, not applied
  };
  forge();
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");  // the real worker's outcome stands
  forge();  // replayed after the task ended
  auto st = json::parse(fleet.cli({"status", id, "--json"}, 30s, keys.as("alice")).out);
  CHECK(st["state"] == "succeeded");
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_messages_malformed_total{reason="STALE_RESULT"})") >= 2);
  SECTION("a client key replaying a worker's routing id is refused outright") {
    RawPeer client_as_w0(fleet.broker, keys.client_keys("alice"), "w0-replay");
    client_as_w0.send(protocol::msg::kResult, [&](protocol::Writer& w) { w.kv("task_id", id).kv("attempt", 1); });
    auto err = client_as_w0.next(protocol::msg::kError);
    REQUIRE(err.type == "error");
    CHECK(protocol::decode_error(err.body->view()).code == kbfleet::ErrorCode::kForbidden);
  }
}

TEST_CASE("issue 7: a subscriber sees only its tenant's events", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet());
  REQUIRE(fleet.wait_for_workers(1));
  zmq::context_t ctx(1);
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  REQUIRE(transport::set_curve_client(sub, keys.client_keys("asub")));
  sub.set(zmq::sockopt::linger, 0);
  // Everything it might try for other tenants, then its own tenant topic last: once its own
  // events arrive, the broker has judged (and refused) every earlier subscription.
  for (const char* topic : {"", "task.", "tenant.", "tenant.beta.", "plugin.hello"}) sub.set(zmq::sockopt::subscribe, topic);
  sub.set(zmq::sockopt::subscribe, "tenant.acme.");
  sub.connect(fleet.events);
  std::set<std::string> topics;
  // Waits for the `done` event of `task` on the subscriber, recording every topic seen.
  auto wait_done = [&](const std::string& task, std::chrono::milliseconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 100ms);
      std::vector<zmq::message_t> frames;
      while (zmq::recv_multipart(sub, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
        REQUIRE(frames.size() == 4);
        topics.insert(frames[0].to_string());
        auto body = protocol::Body::decode(std::string_view(static_cast<const char*>(frames[3].data()), frames[3].size()));
        REQUIRE(body);
        auto e = protocol::Event::decode(body->view());
        REQUIRE(e);
        const bool done = e->type == "done" && e->task_id == task;
        frames.clear();
        if (done) return true;
      }
    }
    return false;
  };
  // The subscription travels while the first task is submitted; retry with a new task if the
  // first one's events went out before the broker applied it.
  std::string a1;
  bool seen = false;
  for (int i = 0; i < 5 && !seen; ++i) {
    a1 = submit(fleet, keys, "alice", {"hello", "greet"});
    seen = wait_done(a1, 15s);
  }
  REQUIRE(seen);
  const std::string b1 = submit(fleet, keys, "bob", {"hello", "greet"});
  REQUIRE(fleet.wait_for_terminal(b1) == "succeeded");
  const std::string a2 = submit(fleet, keys, "alice", {"hello", "greet"});
  REQUIRE(wait_done(a2, 30s));  // events arrive in order: b1's would have come before a2's
  CHECK(topics == std::set<std::string>{"tenant.acme."});
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_auth_denied_total{reason="subscription"})") >= 5);
}

TEST_CASE("issue 7: one tenant's flood does not starve another tenant's single task", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet(1, 1));
  REQUIRE(fleet.wait_for_workers(1));
  kbfleet::cli::Client bob(fleet.broker, 10s, keys.client_keys("bob"));
  std::vector<std::string> flood;
  for (int i = 0; i < 2000; ++i) {
    auto r = bob.call(protocol::msg::kSubmit, [](protocol::Writer& w) { w.kv("plugin", "noop").kv("handler", "ok"); });
    REQUIRE(r);
    flood.emplace_back(r->body.view().str_or("task_id", ""));
  }
  const std::string mine = submit(fleet, keys, "alice", {"noop", "ok"});
  REQUIRE(fleet.wait_for_terminal(mine) == "succeeded");
  auto st = json::parse(fleet.cli({"status", mine, "--json"}, 30s, keys.as("alice")).out);
  const std::int64_t submitted = st["submitted_ms"], started = st["started_ms"];
  // Bob's tasks that started after alice's was queued and before it started: round robin over
  // tenants allows the one running plus at most one more (a flood of 2000 would otherwise run first).
  int overtook = 0, started_flood = 0;
  for (const auto& id : flood) {
    auto r = bob.call(protocol::msg::kStatus, [&](protocol::Writer& w) { w.kv("task_id", id); });
    REQUIRE(r);
    auto task = r->body.view().map_or_none("task");
    REQUIRE(task);
    const std::int64_t s = (*task)->i64_or("started_ms", 0);
    if (s > 0) ++started_flood;
    if (s >= submitted && s <= started) ++overtook;
  }
  INFO("flood tasks started so far: " << started_flood);
  CHECK(overtook <= 2);
  CHECK(started_flood < 1000);  // alice did not wait for the flood to drain
}

TEST_CASE("issue 7: tenant limits: plugin allow-list, queued tasks", "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet(0));  // no worker: tasks stay queued
  auto r = fleet.cli({"submit", "build", "build"}, 30s, keys.as("lim"));
  CHECK(r.exit_code == 77);
  CHECK_THAT(r.err, Catch::Contains("FORBIDDEN") && Catch::Contains("plugin 'build'"));
  submit(fleet, keys, "lim", {"hello", "greet"});
  submit(fleet, keys, "lim", {"hello", "greet"});
  auto full = fleet.cli({"submit", "hello", "greet"}, 30s, keys.as("lim"));
  CHECK(full.exit_code != 0);
  CHECK_THAT(full.err, Catch::Contains("QUEUE_FULL") && Catch::Contains("max_queued"));
  submit(fleet, keys, "bob", {"hello", "greet"});  // other tenants are not affected
}

TEST_CASE("issue 7: SIGHUP reloads the allow-list without dropping connections", "[integration][security]") {
  Keys keys;
  keys.write_allow("", /*with_alice=*/false);
  Fleet fleet(keys.fleet(0));
  CHECK(fleet.cli({"workers"}, 30s, keys.as("alice")).exit_code == 77);  // not listed yet
  kbfleet::cli::Client bob(fleet.broker, 10s, keys.client_keys("bob"));
  REQUIRE(bob.call(protocol::msg::kWorkers, [](protocol::Writer&) {}));  // bob's connection is open
  // A raw connection with a socket monitor: it must see one connect and no disconnect throughout.
  RawPeer watched(fleet.broker, keys.client_keys("bob"), "");
  REQUIRE(zmq_socket_monitor(watched.sock.handle(), "inproc://watch", ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) == 0);
  zmq::socket_t monitor(watched.ctx, zmq::socket_type::pair);
  monitor.connect("inproc://watch");
  auto round_trip = [&] {
    watched.send(protocol::msg::kInfo, [](protocol::Writer& w) { w.kv("req", 1); });
    REQUIRE(watched.next(protocol::msg::kInfo).type == "info");
  };
  round_trip();
  auto events_seen = [&] {
    std::vector<std::uint16_t> seen;
    zmq::message_t ev;
    while (monitor.recv(ev, zmq::recv_flags::dontwait)) {
      std::uint16_t id = 0;
      std::memcpy(&id, ev.data(), 2);
      seen.push_back(id);
      while (monitor.get(zmq::sockopt::rcvmore)) (void)monitor.recv(ev);
    }
    return seen;
  };
  auto reload = [&](double n) {
    fleet.broker_process->signal(SIGHUP);
    auto end = std::chrono::steady_clock::now() + 10s;
    while (scrape_metric(fleet.broker_metrics, "kbfleet_broker_auth_reloads_total") < n) {
      REQUIRE(std::chrono::steady_clock::now() < end);
    }
  };
  keys.write_allow("");  // adds alice
  reload(1);
  CHECK(fleet.cli({"workers"}, 30s, keys.as("alice")).exit_code == 0);
  REQUIRE(bob.call(protocol::msg::kWorkers, [](protocol::Writer&) {}));  // same connection, still served
  round_trip();
  // TCP connects asynchronously, so the monitor may report the first connect; never a disconnect.
  auto seen = events_seen();
  CHECK(std::count(seen.begin(), seen.end(), ZMQ_EVENT_DISCONNECTED) == 0);
  CHECK(std::count(seen.begin(), seen.end(), ZMQ_EVENT_CONNECTED) <= 1);
  SECTION("a key removed by a reload is refused on its open connection too") {
    std::ofstream(keys.allow()) << "@alice.pub acme client\n";
    reload(2);
    auto r = bob.call(protocol::msg::kWorkers, [](protocol::Writer&) {});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == kbfleet::ErrorCode::kUnauthenticated);
  }
  SECTION("a broken allow-list keeps the previous one") {
    std::ofstream(keys.allow()) << "garbage line\n";
    fleet.broker_process->signal(SIGHUP);
    auto end = std::chrono::steady_clock::now() + 10s;
    while (read_file(fleet.dir + "/broker.log").find("allow-list reload failed") == std::string::npos) {
      REQUIRE(std::chrono::steady_clock::now() < end);
    }
    CHECK(bob.call(protocol::msg::kWorkers, [](protocol::Writer&) {}));
    CHECK(fleet.cli({"workers"}, 30s, keys.as("alice")).exit_code == 0);
  }
}

TEST_CASE("issue 7: a blob is deduplicated only within a tenant, another tenant must upload it",
          "[integration][security]") {
  Keys keys;
  Fleet fleet(keys.fleet());
  REQUIRE(fleet.wait_for_workers(1));
  const std::string received = "kbfleet_broker_artifact_received_bytes_total";
  auto run_big = [&](const std::string& who) {
    const std::string id = submit(fleet, keys, who, {"big", "make", "--input", R"({"mib":1})"});
    REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
    return id;
  };
  run_big("alice");
  const double after_first = scrape_metric(fleet.broker_metrics, received);
  CHECK(after_first == 1048576);
  run_big("alice");  // same tenant, same content: deduplicated, no upload
  CHECK(scrape_metric(fleet.broker_metrics, received) == after_first);
  const std::string bobs = run_big("bob");  // same content, other tenant: uploaded again
  CHECK(scrape_metric(fleet.broker_metrics, received) == 2 * after_first);
  CHECK(fleet.cli({"artifacts", "get", bobs, "blob", "-o", fleet.dir + "/b.bin"}, 30s, keys.as("bob")).exit_code == 0);
}

TEST_CASE("issue 7: a tenant over its submission rate gets RATE_LIMITED with retry_after_ms", "[integration][security]") {
  Keys keys;
  keys.write_allow("tenant slow rate=1 burst=2\n@mallory.pub slow client\n");
  Fleet fleet(keys.fleet(0));
  kbfleet::cli::Client c(fleet.broker, 10s, keys.client_keys("mallory"));
  auto once = [&] {
    return c.call(protocol::msg::kSubmit, [](protocol::Writer& w) { w.kv("plugin", "hello").kv("handler", "greet"); });
  };
  REQUIRE(once());
  REQUIRE(once());  // the burst
  auto limited = once();
  REQUIRE_FALSE(limited);
  CHECK(limited.error().code == kbfleet::ErrorCode::kRateLimited);
  CHECK(std::stoi(limited.error().details.at("retry_after_ms")) > 0);
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_auth_denied_total{reason="rate"})") == 1);
}

TEST_CASE("issue 7: a tenant at its max_running waits while another tenant's task runs", "[integration][security]") {
  Keys keys;
  keys.write_allow("tenant one max_running=1\n@mallory.pub one client\n");
  Fleet fleet(keys.fleet(1, 2));  // two slots
  REQUIRE(fleet.wait_for_workers(1));
  const std::string first = submit(fleet, keys, "mallory", {"slow", "sleep", "--input", R"({"ticks":40})"});
  REQUIRE(!fleet.wait_until_running(first).empty());
  const std::string second = submit(fleet, keys, "mallory", {"slow", "sleep", "--input", R"({"ticks":1})"});
  const std::string other = submit(fleet, keys, "bob", {"slow", "sleep", "--input", R"({"ticks":1})"});
  // Bob's task takes the free slot; the limited tenant's second task waits for its first.
  REQUIRE(fleet.wait_for_terminal(other) == "succeeded");
  auto st = json::parse(fleet.cli({"status", second, "--json"}).out);
  CHECK(st["state"] == "queued");
  REQUIRE(fleet.wait_for_terminal(second) == "succeeded");
  auto a = json::parse(fleet.cli({"status", first, "--json"}).out);
  auto b = json::parse(fleet.cli({"status", second, "--json"}).out);
  CHECK(b["started_ms"].get<std::int64_t>() >= a["finished_ms"].get<std::int64_t>());
}
