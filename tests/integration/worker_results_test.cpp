// A real kbfleet-worker against a scripted broker (a ROUTER in the test): what the worker does
// when a broker that is alive never acknowledges its result. Real sockets on loopback, a real
// sandboxed handler; every wait is bounded by a deadline and ends on a frame arriving.
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/protocol/wire.hpp"
#include "tests/support/fleet.hpp"

using namespace kbfleet::test;
using kbfleet::protocol::Body;
using kbfleet::protocol::Writer;

namespace {

struct Frame {
  std::string peer;
  std::string type;
  std::optional<Body> body;
};

// Plays the broker's side of docs/protocol.md, just enough to hand out one task.
class ScriptedBroker {
 public:
  ScriptedBroker() : router_(ctx_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  const std::string& endpoint() const { return endpoint_; }

  void send(const std::string& peer, const std::string& type, const std::string& body) {
    std::vector<zmq::message_t> frames;
    frames.emplace_back(peer);
    frames.emplace_back(std::string("KBF/1"));
    frames.emplace_back(type);
    frames.emplace_back(body);
    REQUIRE(zmq::send_multipart(router_, frames));
  }

  // The next message within `wait`, or nullopt.
  std::optional<Frame> recv(std::chrono::milliseconds wait) {
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, wait) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(router_, std::back_inserter(frames)));
    REQUIRE(frames.size() >= 4);
    Frame f{frames[0].to_string(), frames[2].to_string(), std::nullopt};
    auto body = Body::decode(frames[3].to_string_view());
    REQUIRE(body);
    f.body = std::move(*body);
    return f;
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t router_;
  std::string endpoint_;
};

std::string empty_map() { return Writer().begin_map().end_map().take(); }

}  // namespace

TEST_CASE("a result the broker cannot read is replaced by a minimal failure, not re-sent forever",
          "[integration][worker][results]") {
  ScriptedBroker broker;
  const std::string dir = make_temp_dir();
  const std::string work = dir + "/work";
  std::filesystem::create_directories(work);
  std::filesystem::create_directories(dir + "/plugins");
  // A copy: the sandbox binds the plugin at its host path, which must not lie under /tmp (a
  // checkout there would be hidden by the task's private /tmp).
  std::filesystem::copy(source_path("tests/fixtures/plugins/noop"), dir + "/plugins/noop",
                        std::filesystem::copy_options::recursive);
  Daemon worker({bin("kbfleet-worker"), "--broker", broker.endpoint(), "--plugins",
                 dir + "/plugins", "--slots", "1", "--work", work, "--metrics",
                 "127.0.0.1:0", "--worker-id", "w0", "--heartbeat-ms", "200"},
                dir + "/worker.log");
  const std::string metrics = worker.wait_for_key("metrics", 10s);
  REQUIRE_FALSE(metrics.empty());

  auto ready = broker.recv(10s);
  REQUIRE(ready);
  REQUIRE(ready->type == "ready");
  const std::string peer = ready->peer;
  const std::string task_id(32, 'a');
  Writer task;
  task.begin_map().kv("task_id", task_id).kv("attempt", 1).kv("plugin", "noop").kv("version", "1.0.0");
  task.kv("handler", "ok").key("input").nil().key("env").begin_map().end_map().kv("timeout_ms", 10000).end_map();
  broker.send(peer, "task", task.take());

  // Each result is answered as the broker answers a message it cannot read (PROTOCOL_ERROR, req
  // 0), never acknowledged; heartbeats keep the broker visibly alive.
  std::vector<std::pair<std::string, std::string>> results;  // (state, error code) of each send
  const auto deadline = std::chrono::steady_clock::now() + 40s;
  while (std::chrono::steady_clock::now() < deadline) {
    broker.send(peer, "heartbeat", empty_map());
    auto f = broker.recv(200ms);
    if (!f || f->type != "result") continue;
    auto v = f->body->view();
    REQUIRE(v.str_or("task_id", "") == task_id);
    auto outcome = v.map_or_none("outcome");
    REQUIRE(outcome);
    REQUIRE(*outcome);
    broker.send(peer, "error",
                Writer().begin_map().kv("req", 0).kv("code", "PROTOCOL_ERROR").kv("message", "unreadable").end_map().take());
    std::string code;
    if (auto err = (*outcome)->map_or_none("error"); err && *err) code = std::string((*err)->str_or("code", ""));
    results.emplace_back(std::string((*outcome)->str_or("state", "")), code);
    if (results.back().first != "succeeded") {
      CHECK((*outcome)->i64_or("exit_code", -1) == 0);  // what the handler did is kept
      break;
    }
  }
  INFO("results seen: " << results.size());
  REQUIRE(results.size() >= 2);
  // The handler's own result was sent until the worker concluded the broker cannot read it...
  for (std::size_t i = 0; i + 1 < results.size(); ++i) CHECK(results[i].first == "succeeded");
  CHECK(results.size() - 1 == 3);
  // ...then a minimal failure that says so.
  CHECK(results.back() == std::pair<std::string, std::string>{"failed", "PROTOCOL_ERROR"});

  // Acknowledged at last: the worker drops it and counts what happened.
  broker.send(peer, "result_ack", Writer().begin_map().kv("task_id", task_id).kv("attempt", 1).end_map().take());
  const double unread = scrape_metric(metrics, "kbfleet_worker_results_unread_total");
  CHECK(unread == 1);
  CHECK(read_file(dir + "/worker.log").find("sending a minimal failure instead task=" + task_id) != std::string::npos);
  remove_tree(dir);
}
