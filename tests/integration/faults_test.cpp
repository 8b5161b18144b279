// Lost and departing workers: retries, dead letters, graceful drain, a worker gone mid-upload
// (real processes, kill -9), and malformed input.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/protocol/wire.hpp"
#include "tests/support/fleet.hpp"

using namespace kbfleet::test;
using nlohmann::json;

namespace {

std::vector<json> events_of(const Fleet& fleet, const std::string& id) {
  auto tail = fleet.cli({"tail", id, "--json"}, 60s);
  std::vector<json> out;
  std::istringstream lines(tail.out);
  for (std::string line; std::getline(lines, line);) out.push_back(json::parse(line));
  return out;
}

// True once `needle` appears in the file at `path` (a daemon's log), polled until the deadline.
bool wait_for_log(const std::string& path, const std::string& needle, std::chrono::milliseconds deadline) {
  return eventually([&] { return read_file(path).find(needle) != std::string::npos; }, deadline);
}

// A value of /proc/<pid>/status in KiB (VmRSS, VmHWM); -1 if absent.
long proc_status_kb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

// A raw DEALER on the broker's ROUTER endpoint: sends arbitrary frames, reads replies as
// (type, msgpack body as JSON).
class RawClient {
 public:
  explicit RawClient(const std::string& endpoint) : sock_(ctx_, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }

  void send(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      REQUIRE(sock_.send(zmq::buffer(frames[i]), flags));
    }
  }

  struct Reply {
    std::string type;
    json body;
  };

  // The next reply, or nullopt at the deadline.
  std::optional<Reply> recv(std::chrono::milliseconds deadline = 10s) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, deadline) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(sock_, std::back_inserter(frames)));
    REQUIRE(frames.size() >= 3);
    CHECK(frames[0].to_string() == "KBF/1");
    auto handle = msgpack::unpack(static_cast<const char*>(frames[2].data()), frames[2].size());
    std::stringstream text;
    text << handle.get();  // msgpack-c prints maps with string keys as JSON
    return Reply{frames[1].to_string(), json::parse(text.str(), nullptr, false)};
  }

  // Sends `frames` and returns the `error` reply's code ("" if the reply was no error or late).
  std::string error_code_for(const std::vector<std::string>& frames, std::int64_t expect_req = 0) {
    send(frames);
    auto reply = recv();
    // A client that announced itself as a worker also gets the broker's heartbeats: not replies.
    while (reply && reply->type == "heartbeat") reply = recv();
    if (!reply) return "<no reply>";
    if (reply->type != "error") return "<" + reply->type + ">";
    CHECK(reply->body.value("req", -1) == expect_req);
    return reply->body.value("code", "");
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t sock_;
};

std::string packed_map(const std::map<std::string, std::int64_t>& m) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, m);
  return std::string(buf.data(), buf.size());
}

}  // namespace

TEST_CASE("kill -9 of a worker mid-task: the task completes on the other worker, reported once", "[integration][faults]") {
  Fleet fleet({2, 1, {}});
  REQUIRE(fleet.wait_for_workers(2));
  auto id = trim(fleet.cli({"submit", "slow", "sleep", "--input", R"({"ticks":15})"}).out);
  auto victim = fleet.wait_until_running(id);
  REQUIRE(!victim.empty());
  fleet.kill_worker(victim);

  auto events = events_of(fleet, id);
  REQUIRE(!events.empty());
  int done = 0, retries = 0;
  std::vector<std::string> started_on;
  for (std::size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i]["seq"] == static_cast<int>(i) + 1);  // one gapless stream across attempts
    if (events[i]["type"] == "done") ++done;
    if (events[i]["type"] == "retry") ++retries;
    if (events[i]["type"] == "started") started_on.push_back(events[i]["data"]["worker"]);
  }
  CHECK(done == 1);
  CHECK(retries == 1);
  REQUIRE(started_on.size() == 2);
  CHECK(started_on[0] == victim);
  CHECK(started_on[1] != victim);
  CHECK(events.back()["type"] == "done");
  CHECK(events.back()["data"]["state"] == "succeeded");
  auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["state"] == "succeeded");
  CHECK(st["attempt"] == 2);
}

TEST_CASE("a non-idempotent task lost with its worker is dead-lettered, and retry resubmits it", "[integration][faults]") {
  Fleet fleet({2, 1, {}});
  REQUIRE(fleet.wait_for_workers(2));
  auto id = trim(fleet.cli({"submit", "slow", "sleep-once", "--input", R"({"ticks":15})"}).out);
  auto victim = fleet.wait_until_running(id);
  REQUIRE(!victim.empty());
  fleet.kill_worker(victim);

  REQUIRE(fleet.wait_for_terminal(id) == "dead_letter");
  auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["outcome"]["error"]["code"] == "WORKER_LOST");
  auto tail = fleet.cli({"tail", id});
  CHECK(tail.exit_code == 125);
  CHECK(tail.err.find("kbfleet retry " + id) != std::string::npos);  // says what to do

  auto again = fleet.cli({"retry", id});
  REQUIRE(again.exit_code == 0);
  auto new_id = trim(again.out);
  CHECK(new_id != id);
  CHECK(fleet.wait_for_terminal(new_id) == "succeeded");
  CHECK(json::parse(fleet.cli({"status", new_id, "--json"}).out)["retry_of"] == id);
  auto refused = fleet.cli({"retry", new_id});  // only dead letters
  CHECK(refused.exit_code == 65);
  CHECK(refused.err.find("only dead-lettered") != std::string::npos);
}

TEST_CASE("SIGTERM drains a worker: running tasks finish, then it leaves", "[integration][faults]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  auto id = trim(fleet.cli({"submit", "slow", "sleep", "--input", R"({"ticks":10})"}).out);
  REQUIRE(!fleet.wait_until_running(id).empty());
  fleet.workers[0]->signal(SIGTERM);
  CHECK(fleet.workers[0]->wait(30s) == 0);  // exits by itself once the task is done
  auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["state"] == "succeeded");
  // It said goodbye: the broker dropped it at once instead of waiting for missed heartbeats.
  CHECK(json::parse(fleet.cli({"workers", "--json"}).out).empty());
}

TEST_CASE("a SIGSTOPped worker is declared lost within the liveness window, its task is retried on another worker, and its stale result is refused after SIGCONT", "[integration][faults]") {
  // Fleet: broker and workers at --heartbeat-ms 200 with the default --liveness 5: a worker
  // silent for 1 s is lost.
  Fleet fleet({2, 1, {}});
  REQUIRE(fleet.wait_for_workers(2));
  auto id = trim(fleet.cli({"submit", "slow", "sleep", "--input", R"({"ticks":20})"}).out);
  auto victim = fleet.wait_until_running(id);
  REQUIRE(!victim.empty());
  auto& stopped = *fleet.workers.at(static_cast<std::size_t>(std::stoi(victim.substr(1))));
  stopped.signal(SIGSTOP);
  auto stopped_at = std::chrono::steady_clock::now();

  // Lost within the liveness window (1 s, plus a generous margin for a loaded CI machine).
  REQUIRE(wait_for_log(fleet.dir + "/broker.log", "missed heartbeats", 10s));
  CHECK(std::chrono::steady_clock::now() - stopped_at < 10s);
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
  auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["attempt"] == 2);
  CHECK(st["worker"] != victim);

  auto check_events = [&] {
    auto events = events_of(fleet, id);
    int done = 0, retries = 0;
    std::vector<std::string> started_on;
    for (std::size_t i = 0; i < events.size(); ++i) {
      CHECK(events[i]["seq"] == static_cast<int>(i) + 1);
      if (events[i]["type"] == "done") ++done;
      if (events[i]["type"] == "retry") {
        ++retries;
        CHECK(events[i]["data"]["attempt"] == 2);
      }
      if (events[i]["type"] == "started") started_on.push_back(events[i]["data"]["worker"]);
      if (events[i]["type"] == "output") CHECK(events[i]["attempt"] == (started_on.size() == 2 ? 2 : 1));
    }
    CHECK(done == 1);
    CHECK(retries == 1);
    REQUIRE(started_on.size() == 2);
    CHECK(started_on[0] == victim);
    CHECK(started_on[1] != victim);
    REQUIRE(!events.empty());
    CHECK(events.back()["type"] == "done");
    CHECK(events.back()["attempt"] == 2);
    CHECK(events.back()["data"]["state"] == "succeeded");
    return events.size();
  };
  auto events_before = check_events();

  // The stopped worker wakes up: its handler went on running meanwhile, so it reports attempt 1.
  stopped.signal(SIGCONT);
  REQUIRE(wait_for_log(fleet.dir + "/broker.log", "stale result ignored task=" + id + " attempt=1", 20s));
  REQUIRE(process_alive(stopped.pid()));
  // Its handler's output of attempt 1, read after SIGCONT, was dropped as stale too (counted).
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_messages_malformed_total{reason="STALE_EVENTS"})") >= 1);
  CHECK(scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_messages_malformed_total{reason="STALE_RESULT"})") >= 1);
  st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["state"] == "succeeded");
  CHECK(st["attempt"] == 2);
  CHECK(st["worker"] != victim);
  CHECK(check_events() == events_before);  // nothing of attempt 1 was appended

  // The broker keeps serving, and the woken worker rejoins.
  REQUIRE(fleet.wait_for_workers(2));
  auto r = fleet.cli({"run", "noop", "ok"});
  CHECK(r.exit_code == 0);
  CHECK(process_alive(fleet.broker_process->pid()));
}

TEST_CASE("malformed and oversized frames and msgpack bombs do not stop the broker from serving others", "[integration][faults]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  const pid_t broker = fleet.broker_process->pid();
  const std::string tag = "KBF/1";
  const auto serves = [&] {
    auto r = fleet.cli({"run", "noop", "ok"}, 30s);
    CHECK(r.exit_code == 0);
    return process_alive(broker) && r.exit_code == 0;
  };
  const double malformed_before = scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_messages_malformed_total{reason="PROTOCOL_ERROR"})");

  RawClient raw(fleet.broker);
  // The client works at all: a valid request is answered with the same req.
  raw.send({tag, "info", packed_map({{"req", 7}})});
  auto info = raw.recv();
  REQUIRE(info);
  CHECK(info->type == "info");
  CHECK(info->body.value("req", -1) == 7);

  SECTION("framing and header errors are answered with their documented codes") {
    CHECK(raw.error_code_for({"hello"}) == "PROTOCOL_ERROR");                            // one frame, no header
    CHECK(raw.error_code_for({"XYZ/1", "info", packed_map({{"req", 1}})}) == "PROTOCOL_ERROR");  // not the tag
    CHECK(raw.error_code_for({"", "", ""}) == "PROTOCOL_ERROR");
    CHECK(raw.error_code_for({"KBF/2", "info", packed_map({{"req", 1}})}) == "UNSUPPORTED_VERSION");
    CHECK(raw.error_code_for({"KBF/999999999999", "info", packed_map({{"req", 1}})}) == "UNSUPPORTED_VERSION");
    // An unknown type with a readable body: PROTOCOL_ERROR, answering that request's req.
    CHECK(raw.error_code_for({tag, "no-such-type", packed_map({{"req", 42}})}, 42) == "PROTOCOL_ERROR");
    CHECK(raw.error_code_for({tag, std::string(100, 't'), packed_map({{"req", 1}})}) == "PROTOCOL_ERROR");
    // More frames than allowed (8): refused as a whole.
    std::vector<std::string> many{tag, "info", packed_map({{"req", 3}})};
    for (int i = 0; i < 50; ++i) many.push_back("x");
    CHECK(raw.error_code_for(many) == "PROTOCOL_ERROR");
    std::vector<std::string> nine{tag, "info", packed_map({{"req", 3}}), "1", "2", "3", "4", "5", "6"};
    CHECK(raw.error_code_for(nine) == "PROTOCOL_ERROR");
    REQUIRE(serves());
  }

  SECTION("bodies that are not msgpack maps, or are msgpack bombs, get PROTOCOL_ERROR") {
    const std::string map1 = "\x81\xa1x";  // {"x": ...}
    // 100,000 maps nested as values: {"x": {"x": ...}}.
    std::string nested_maps;
    for (int i = 0; i < 100000; ++i) nested_maps += map1;
    std::vector<std::pair<std::string, std::string>> bodies{
        {"not msgpack", "\xc1"},
        {"text", "hello, broker"},
        {"empty", ""},
        {"truncated map", "\x82\xa3req"},
        {"trailing bytes", packed_map({{"req", 1}}) + "junk"},
        {"an array, not a map", "\x91\x01"},
        {"a map claiming 2^32-1 entries", std::string("\xdf\xff\xff\xff\xff", 5)},
        {"a map claiming 2^32-1 entries, nested", map1 + std::string("\xdf\xff\xff\xff\xff", 5)},
        {"an array claiming 2^32-1 entries", map1 + std::string("\xdd\xff\xff\xff\xff", 5)},
        {"a string claiming 4 GiB", map1 + std::string("\xdb\xff\xff\xff\xff", 5)},
        {"a binary claiming 4 GiB", map1 + std::string("\xc6\xff\xff\xff\xff", 5)},
        {"an ext", map1 + std::string("\xd4\x01\x00", 3)},
        {"100000 nested arrays", map1 + std::string(100000, '\x91') + "\xc0"},
        {"100000 nested maps", nested_maps + "\xc0"},
        {"33 nested levels", map1 + std::string(32, '\x91') + "\xc0"},  // 1 map + 32 arrays
    };
    // Arrays claiming the allowed maximum of entries, nested to the allowed depth, with no
    // elements behind the headers: a small message that asks the decoder for a lot of memory.
    std::string wide;
    for (int i = 0; i < 31; ++i) wide += std::string("\xdd\x00\x01\x86\xa0", 5);  // array32 of 100000
    bodies.emplace_back("31 nested arrays each claiming 100000 entries", map1 + wide);
    std::string wide_maps;
    for (int i = 0; i < 31; ++i) wide_maps += std::string("\xde\x27\x10\xa1x", 5);  // map16 of 10000
    bodies.emplace_back("31 nested maps each claiming 10000 entries", map1 + wide_maps);
    for (const auto& [what, body] : bodies) {
      INFO(what);
      CHECK(raw.error_code_for({tag, "info", body}) == "PROTOCOL_ERROR");
      REQUIRE(process_alive(broker));
    }
    // At the limit (depth 32 counting the body map) a body is accepted.
    raw.send({tag, "info", "\x82\xa3req\x05\xa1x" + std::string(31, '\x91') + "\xc0"});  // 1 map + 31 arrays
    auto deep = raw.recv();
    REQUIRE(deep);
    CHECK(deep->type == "info");
    CHECK(deep->body.value("req", -1) == 5);
    // A body over 8 MiB in a message under 16 MiB: refused before unpacking.
    std::string big = map1 + std::string("\xc6\x00\xa0\x00\x00", 5) + std::string(10u << 20, 'b');
    CHECK(raw.error_code_for({tag, "info", big}) == "PROTOCOL_ERROR");
    REQUIRE(serves());
    const double malformed_after = scrape_metric(fleet.broker_metrics, R"(kbfleet_broker_messages_malformed_total{reason="PROTOCOL_ERROR"})");
    CHECK(malformed_after - malformed_before >= static_cast<double>(bodies.size()) + 1);
    // The bombs did not make the broker balloon, not even for a moment.
    long hwm = proc_status_kb(broker, "VmHWM");
    INFO("broker VmHWM " << hwm << " KiB");
    CHECK(hwm > 0);
    CHECK(hwm < 300 * 1024);
  }

  SECTION("a 64 MiB frame is dropped with its connection, without the broker holding it") {
    // Asks `info` until answered: a request queued behind a dropped message is lost with it.
    const auto answers = [](RawClient& client, std::int64_t req) {
      auto end = std::chrono::steady_clock::now() + 20s;
      while (std::chrono::steady_clock::now() < end) {
        client.send({"KBF/1", "info", packed_map({{"req", req}})});
        for (auto reply = client.recv(1s); reply; reply = client.recv(100ms)) {
          if (reply->type == "info" && reply->body.value("req", -1) == req) return true;
        }
      }
      return false;
    };
    std::string huge(64u << 20, 'z');
    raw.send({tag, "info", huge});
    // ZeroMQ drops the connection (over ZMQ_MAXMSGSIZE); the DEALER reconnects by itself and
    // the same client is served again.
    CHECK(answers(raw, 11));
    REQUIRE(serves());
    long rss = proc_status_kb(broker, "VmRSS");
    long hwm = proc_status_kb(broker, "VmHWM");
    INFO("broker VmRSS " << rss << " KiB, VmHWM " << hwm << " KiB");
    CHECK(rss > 0);
    CHECK(rss < 300 * 1024);
    CHECK(hwm < 300 * 1024);
    // More of them at once, on other connections, one as a single frame: still nothing held.
    std::vector<std::unique_ptr<RawClient>> others;
    for (int i = 0; i < 3; ++i) {
      others.push_back(std::make_unique<RawClient>(fleet.broker));
      others.back()->send({tag, "info", huge});
      others.back()->send({std::string(64u << 20, 'q')});
    }
    for (std::size_t i = 0; i < others.size(); ++i) CHECK(answers(*others[i], 20 + static_cast<std::int64_t>(i)));
    REQUIRE(serves());
    CHECK(proc_status_kb(broker, "VmRSS") < 300 * 1024);
    CHECK(proc_status_kb(broker, "VmHWM") < 300 * 1024);
  }
}

TEST_CASE("a worker that disconnects mid-upload leaves no partial blob, and its task runs again elsewhere", "[integration][faults]") {
  Fleet fleet({0, 1, {}});
  const std::string tmp_dir = fleet.dir + "/data/cas/tmp";
  const auto temp_files = [&] {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(tmp_dir)) ++n;
    return n;
  };
  using kbfleet::protocol::Writer;
  auto fake = std::make_unique<RawClient>(fleet.broker);
  // A worker offering the noop plugin (docs/protocol.md, "Workers"), played by the test.
  Writer ready;
  ready.begin_map().kv("worker_id", "fake").kv("host", "test").kv("pid", 1).kv("slots", 1);
  ready.key("capabilities").begin_array().end_array().key("layers").begin_array().end_array();
  ready.key("plugins").begin_array().begin_map().kv("id", "noop").kv("version", "1.0.0");
  ready.kv_list("handlers", {"ok"}).key("capabilities").begin_array().end_array().kv_list("idempotent", {"ok"});
  ready.end_map().end_array().key("running").begin_array().end_array().end_map();
  fake->send({"KBF/1", "ready", ready.take()});
  auto submitted = fleet.cli({"submit", "noop", "ok"});
  REQUIRE(submitted.exit_code == 0);
  const std::string id = trim(submitted.out);

  std::optional<RawClient::Reply> task;
  for (auto r = fake->recv(); r; r = fake->recv()) {
    if (r->type == "task") {
      task = r;
      break;
    }
  }
  REQUIRE(task);
  REQUIRE(task->body.value("task_id", "") == id);
  Writer begin;
  begin.begin_map().kv("req", 1).kv("task_id", id).kv("attempt", 1).kv("name", "blob").kv("path", "out/blob");
  begin.kv("size", std::int64_t{1} << 20).kv("sha256", std::string(64, 'a')).kv("content_type", "application/octet-stream").end_map();
  fake->send({"KBF/1", "upload_begin", begin.take()});
  std::string upload_id;
  for (auto r = fake->recv(); r; r = fake->recv()) {
    if (r->type == "upload_ready") {
      upload_id = r->body.value("upload_id", "");
      break;
    }
  }
  REQUIRE_FALSE(upload_id.empty());
  fake->send({"KBF/1", "upload_chunk", Writer().begin_map().kv("req", 2).kv("upload_id", upload_id).kv("offset", 0).end_map().take(),
              std::string(256 << 10, 'x')});
  bool acked = false;
  for (auto r = fake->recv(); r && !acked; r = fake->recv()) acked = r->type == "upload_ack" && r->body.value("received", 0) == (256 << 10);
  REQUIRE(acked);
  CHECK(temp_files() == 1);  // the partial upload, never in the store

  fake.reset();  // gone mid-upload: no drain, no bye, no more heartbeats
  REQUIRE(wait_for_log(fleet.dir + "/broker.log", "worker lost", 20s));
  CHECK(eventually([&] { return temp_files() == 0; }, 10s));

  fleet.add_worker();
  CHECK(fleet.wait_for_terminal(id) == "succeeded");
  auto status = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(status.value("attempt", 0) == 2);
  CHECK(status["artifacts"].empty());  // nothing of the lost upload was recorded
}

namespace {

// The `ready` of a raw worker offering the fixture plugin noop@1.0.0 (handler ok), with
// `slots` slots and the protocol `features` it announces.
std::string noop_worker_ready(int slots, const std::vector<std::string>& features = {}) {
  kbfleet::protocol::Writer ready;
  ready.begin_map().kv("worker_id", "fake").kv("host", "test").kv("pid", 1).kv("slots", slots);
  ready.key("capabilities").begin_array().end_array().key("layers").begin_array().end_array();
  ready.key("plugins").begin_array().begin_map().kv("id", "noop").kv("version", "1.0.0");
  ready.kv_list("handlers", {"ok"}).key("capabilities").begin_array().end_array();
  ready.end_map().end_array().key("running").begin_array().end_array();
  if (!features.empty()) ready.kv_list("features", features);
  return ready.end_map().take();
}

// Submits `n` noop tasks (for a raw worker to take); returns their ids in submission order.
std::vector<std::string> submit_noops(const Fleet& fleet, int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    auto submitted = fleet.cli({"submit", "noop", "ok"});
    REQUIRE(submitted.exit_code == 0);
    ids.push_back(trim(submitted.out));
  }
  return ids;
}

}  // namespace

TEST_CASE("a turn's assignments, results and acknowledgements for one worker travel as one batch each", "[integration][protocol]") {
  Fleet fleet({0, 1, {}});
  using kbfleet::protocol::Writer;
  const std::vector<std::string> ids = submit_noops(fleet, 4);
  // A worker with 4 slots joins while 4 tasks wait: the broker assigns them in one turn.
  RawClient fake(fleet.broker);
  fake.send({"KBF/1", "ready", noop_worker_ready(4)});

  std::optional<RawClient::Reply> batch;
  for (auto r = fake.recv(); r; r = fake.recv()) {
    if (r->type == "task") FAIL("4 tasks assigned in one turn came as single `task` messages");
    if (r->type == "tasks") {
      batch = r;
      break;
    }
  }
  REQUIRE(batch);
  REQUIRE(batch->body["tasks"].size() == 4);
  std::set<std::string> assigned;
  for (const auto& t : batch->body["tasks"]) assigned.insert(t.value("task_id", ""));
  CHECK(assigned == std::set<std::string>(ids.begin(), ids.end()));

  // Malformed batches are refused with PROTOCOL_ERROR (req 0) and change nothing.
  CHECK(fake.error_code_for({"KBF/1", "results", Writer().begin_map().kv("results", "no").end_map().take()}) ==
        "PROTOCOL_ERROR");

  // All four results in one `results` message (one of them twice: the duplicate is stale).
  Writer results;
  results.begin_map().key("results").begin_array();
  for (int i = 0; i < 5; ++i) {
    results.begin_map().kv("task_id", ids[static_cast<std::size_t>(i % 4)]).kv("attempt", 1);
    results.key("outcome").begin_map().kv("state", "succeeded").kv("exit_code", 0).end_map().end_map();
  }
  results.end_array().end_map();
  fake.send({"KBF/1", "results", results.take()});
  std::optional<RawClient::Reply> acks;
  for (auto r = fake.recv(); r; r = fake.recv()) {
    if (r->type == "result_ack") {
      acks = r;
      break;
    }
  }
  REQUIRE(acks);
  REQUIRE(acks->body["acks"].size() == 5);  // every result is acknowledged, stale ones too
  for (const auto& a : acks->body["acks"]) CHECK(a.value("attempt", 0) == 1);
  for (const auto& id : ids) CHECK(fleet.wait_for_terminal(id) == "succeeded");
}

TEST_CASE("a worker that announces acks_in_tasks gets result acknowledgements inside its next assignment", "[integration][protocol]") {
  Fleet fleet({0, 1, {}});
  using kbfleet::protocol::Writer;
  const std::vector<std::string> ids = submit_noops(fleet, 2);
  // One slot, two tasks waiting: the second is assigned in the turn that takes the first's result.
  RawClient fake(fleet.broker);
  fake.send({"KBF/1", "ready", noop_worker_ready(1, {"acks_in_tasks"})});

  auto next_of = [&](std::initializer_list<std::string_view> types) -> std::optional<RawClient::Reply> {
    for (auto r = fake.recv(); r; r = fake.recv()) {
      for (auto t : types) {
        if (r->type == t) return r;
      }
    }
    return std::nullopt;
  };
  auto result_of = [](const std::string& id) {
    Writer w;
    w.begin_map().kv("task_id", id).kv("attempt", 1);
    w.key("outcome").begin_map().kv("state", "succeeded").kv("exit_code", 0).end_map().end_map();
    return w.take();
  };
  auto first = next_of({"task", "tasks"});
  REQUIRE(first);
  REQUIRE(first->type == "task");
  const std::string a = first->body.value("task_id", "");
  const std::string b = a == ids[0] ? ids[1] : ids[0];
  CHECK(a == ids[0]);  // submission order

  fake.send({"KBF/1", "result", result_of(a)});
  auto second = next_of({"task", "tasks", "result_ack"});
  REQUIRE(second);
  CHECK(second->type == "tasks");  // not a separate result_ack first
  REQUIRE(second->body["tasks"].size() == 1);
  CHECK(second->body["tasks"][0].value("task_id", "") == b);
  REQUIRE(second->body["acks"].size() == 1);
  CHECK(second->body["acks"][0].value("task_id", "") == a);
  CHECK(second->body["acks"][0].value("attempt", 0) == 1);

  // Nothing else to assign: the held acknowledgement still comes, as a result_ack.
  fake.send({"KBF/1", "result", result_of(b)});
  auto ack = next_of({"result_ack", "tasks"});
  REQUIRE(ack);
  CHECK(ack->type == "result_ack");
  CHECK(ack->body.value("task_id", "") == b);
  for (const auto& id : ids) CHECK(fleet.wait_for_terminal(id) == "succeeded");
}
