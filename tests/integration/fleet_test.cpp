// End-to-end behaviour of a real fleet: broker + workers + CLI as separate processes on loopback.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "cli/client.hpp"
#include "common/hash/sha256.hpp"
#include "common/protocol/messages.hpp"
#include "tests/support/fleet.hpp"

using namespace kbfleet::test;
using nlohmann::json;

TEST_CASE("a task runs end to end and streams the handler's output", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  auto r = fleet.cli({"run", "hello", "greet", "--input", R"({"name":"fleet"})"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("hello, fleet") != std::string::npos);
  CHECK(r.out.find("input: {\"name\":\"fleet\"}") != std::string::npos);
  CHECK(r.err.find("stderr") != std::string::npos);  // the handler's stderr goes to ours
}

TEST_CASE("50 concurrent tasks over 2 workers all succeed exactly once", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  // Submitted back to back through one client connection, so they queue up and overlap.
  kbfleet::cli::Client client(fleet.broker, 5s);
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    kbfleet::protocol::SubmitRequest req;
    req.plugin = "hello";
    req.handler = "greet";
    req.input = *kbfleet::protocol::json_to_msgpack("{\"name\":\"n" + std::to_string(i) + "\"}");
    auto r = client.call(kbfleet::protocol::msg::kSubmit, [&](kbfleet::protocol::Writer& w) { req.encode(w); });
    REQUIRE(r);
    ids.emplace_back(r->body.view().str_or("task_id", ""));
  }
  REQUIRE(std::set<std::string>(ids.begin(), ids.end()).size() == 50);
  std::map<std::string, int> per_worker;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto tail = fleet.cli({"tail", ids[i], "--json"});
    REQUIRE(tail.exit_code == 0);
    int done = 0;
    std::int64_t expected_seq = 1;
    std::istringstream lines(tail.out);
    for (std::string line; std::getline(lines, line);) {
      auto e = json::parse(line);
      CHECK(e["seq"] == expected_seq++);
      if (e["type"] == "done") ++done;
      if (e["type"] == "started") per_worker[e["data"]["worker"]]++;
      if (e["type"] == "output" && e["data"]["stream"] == "stdout" && e["data"]["line"] == 2) {
        CHECK(e["data"]["text"] == "1: hello, n" + std::to_string(i));
      }
    }
    CHECK(done == 1);
    auto st = json::parse(fleet.cli({"status", ids[i], "--json"}).out);
    CHECK(st["state"] == "succeeded");
    CHECK(st["attempt"] == 1);
  }
  CHECK(per_worker.size() == 2);  // both workers took tasks
  int total = 0;
  for (const auto& [w, n] : per_worker) total += n;
  CHECK(total == 50);
}

TEST_CASE("a tail started after the task finished sees every line in order", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  auto sub = fleet.cli({"submit", "chatty", "lines", "--input", R"({"n":3000})"});
  REQUIRE(sub.exit_code == 0);
  auto id = trim(sub.out);
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
  auto tail = fleet.cli({"tail", id});
  REQUIRE(tail.exit_code == 0);
  std::istringstream lines(tail.out);
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    ++n;
    REQUIRE(line == "line " + std::to_string(n));
  }
  CHECK(n == 3000);
}

TEST_CASE("an artifact round trip keeps its sha256", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  // 3 MiB: several upload chunks with flow control, several fetch chunks.
  auto run = fleet.cli({"submit", "big", "make", "--input", R"({"mib":3})"});
  REQUIRE(run.exit_code == 0);
  auto id = trim(run.out);
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
  auto ls = fleet.cli({"artifacts", "ls", id, "--json"});
  REQUIRE(ls.exit_code == 0);
  auto arts = json::parse(ls.out);
  REQUIRE(arts.size() == 1);
  CHECK(arts[0]["name"] == "blob");
  CHECK(arts[0]["size"] == 3 << 20);
  const std::string expected = kbfleet::hash::sha256_hex(std::string(3 << 20, 'k'));
  CHECK(arts[0]["sha256"] == expected);

  auto out = fleet.dir + "/fetched.bin";
  auto get = fleet.cli({"artifacts", "get", id, "blob", "-o", out});
  INFO(get.err);
  REQUIRE(get.exit_code == 0);
  CHECK(kbfleet::hash::sha256_hex(read_file(out)) == expected);
  // The broker stored it content-addressed and verified.
  CHECK(read_file(fleet.dir + "/data/cas/sha256/" + expected.substr(0, 2) + "/" + expected).size() == (3u << 20));

  auto missing = fleet.cli({"artifacts", "get", id, "nope", "-o", out + "2"});
  CHECK(missing.exit_code == 125);
  CHECK(missing.err.find("ARTIFACT_NOT_FOUND") != std::string::npos);
}

TEST_CASE("a timeout kills a handler that ignores SIGTERM, and its children", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  // The child names itself stubborn-child-<token>; none may survive the task.
  const std::string token = std::to_string(::getpid()) + std::to_string(std::random_device{}() % 1000000);
  auto r = fleet.cli({"run", "stubborn", "hang", "--input", token});
  CHECK(r.exit_code == 124);
  CHECK(r.err.find("TIMEOUT") != std::string::npos);
  REQUIRE(r.out.find("started child") != std::string::npos);
  CHECK(processes_with("stubborn-child-" + token).empty());
}

TEST_CASE("a handler's exit status passes through kbfleet run", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  auto r = fleet.cli({"run", "fail", "exit3"});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("failing") != std::string::npos);
}

TEST_CASE("platform failures give their error code and exit code", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  SECTION("unknown plugin") {
    auto r = fleet.cli({"run", "nosuch", "x"});
    CHECK(r.exit_code == 127);
    CHECK(r.err.find("PLUGIN_NOT_FOUND") != std::string::npos);
  }
  SECTION("unknown handler") {
    auto r = fleet.cli({"run", "hello", "nosuch"});
    CHECK(r.exit_code == 127);
    CHECK(r.err.find("HANDLER_NOT_FOUND") != std::string::npos);
    CHECK(r.err.find("greet") != std::string::npos);  // says what exists
  }
  SECTION("invalid manifest names the field") {
    auto r = fleet.cli({"run", "broken", "run"});
    CHECK(r.exit_code == 125);
    CHECK(r.err.find("MANIFEST_INVALID") != std::string::npos);
    CHECK(r.err.find("handlers.run.exec") != std::string::npos);
  }
  SECTION("unknown version") {
    auto r = fleet.cli({"run", "hello@9.9.9", "greet"});
    CHECK(r.exit_code == 127);
    CHECK(r.err.find("1.0.0") != std::string::npos);
  }
  SECTION("input that is not JSON") {
    auto r = fleet.cli({"run", "hello", "greet", "--input", "{oops"});
    CHECK(r.exit_code == 65);
    CHECK(r.err.find("INVALID_ARGUMENT") != std::string::npos);
  }
  SECTION("unknown task id") {
    auto r = fleet.cli({"status", "00000000000000000000000000000000"});
    CHECK(r.exit_code == 125);
    CHECK(r.err.find("TASK_NOT_FOUND") != std::string::npos);
  }
}

TEST_CASE("an unreachable broker is reported, not waited on forever", "[integration]") {
  auto r = run_command({bin("kbfleet"), "--broker", "tcp://127.0.0.1:9", "--request-timeout", "300", "workers"}, 10s);
  CHECK(r.exit_code == 69);
  CHECK(r.err.find("BROKER_UNREACHABLE") != std::string::npos);
  CHECK(r.err.find("KBFLEET_BROKER") != std::string::npos);
}

TEST_CASE("the handler's environment is built from scratch", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  SECTION("only allowed and KBFLEET_ variables reach it") {
    auto r = fleet.cli({"run", "envdump", "env", "--env", "CI_JOB=42", "--env", "LANG=C.UTF-8"});
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("CI_JOB=42") != std::string::npos);
    CHECK(r.out.find("LANG=C.UTF-8") != std::string::npos);
    CHECK(r.out.find("KBFLEET_TASK_ID=") != std::string::npos);
    CHECK(r.out.find("KBFLEET_OUT=") != std::string::npos);
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      auto name = line.substr(0, line.find('='));
      bool allowed = name == "LANG" || name.rfind("CI_", 0) == 0 || name.rfind("KBFLEET_", 0) == 0 || name == "PATH" ||
                     name == "HOME" || name == "PWD";
      INFO(line);
      CHECK(allowed);
    }
  }
  SECTION("a variable the manifest does not allow is refused") {
    auto r = fleet.cli({"run", "envdump", "env", "--env", "SECRET=1"});
    CHECK(r.exit_code == 125);
    CHECK(r.err.find("PERMISSION_DENIED") != std::string::npos);
    CHECK(r.err.find("SECRET") != std::string::npos);
  }
}

TEST_CASE("a running task can be cancelled and its handler is killed", "[integration]") {
  Fleet fleet;
  REQUIRE(fleet.wait_for_workers(2));
  auto sub = fleet.cli({"submit", "stubborn", "hang", "--timeout", "60000"});
  REQUIRE(sub.exit_code == 0);
  auto id = trim(sub.out);
  // Wait until the handler runs (its first output line), then cancel.
  REQUIRE(!fleet.wait_until_running(id).empty());
  auto c = fleet.cli({"cancel", id});
  CHECK(c.exit_code == 0);
  auto tail = fleet.cli({"tail", id, "--json"}, 30s);
  CHECK(tail.exit_code == 130);
  CHECK(tail.out.find("\"type\":\"cancelled\"") != std::string::npos);
  CHECK(tail.out.rfind("\"type\":\"done\"") != std::string::npos);
  auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["state"] == "cancelled");
}

TEST_CASE("a worker re-announces itself when the broker restarts on the same port", "[integration]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  std::string endpoint = fleet.broker;
  fleet.stop_broker();
  fleet.start_broker(endpoint);
  REQUIRE(fleet.broker == endpoint);
  REQUIRE(fleet.wait_for_workers(1));
  auto r = fleet.cli({"run", "hello", "greet"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("hello, world") != std::string::npos);
}

TEST_CASE("a plugin runs only on workers that grant its capabilities", "[integration]") {
  FleetOptions options(1, 1, {});
  options.broker_args = {"--no-capable-worker-ms", "1500"};
  SECTION("no worker grants it: the task waits, then fails NO_CAPABLE_WORKER naming the capability") {
    Fleet fleet(options);
    REQUIRE(fleet.wait_for_workers(1));
    auto sub = fleet.cli({"submit", "gpu", "probe"});
    INFO(sub.err);
    REQUIRE(sub.exit_code == 0);  // accepted and queued, not refused
    auto id = trim(sub.out);
    REQUIRE(fleet.wait_for_terminal(id, 30s) == "failed");
    auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
    CHECK(st["outcome"]["error"]["code"] == "NO_CAPABLE_WORKER");
    const std::string message = st["outcome"]["error"]["message"];
    CHECK(message.find("missing: gpu") != std::string::npos);
    CHECK(message.find("--grant gpu") != std::string::npos);
    CHECK(st["attempt"] == 0);  // never dispatched
    CHECK(st["finished_ms"].get<std::int64_t>() - st["submitted_ms"].get<std::int64_t>() >= 1500);
  }
  SECTION("kbfleet run waits, then exits 125 with NO_CAPABLE_WORKER") {
    Fleet fleet(options);
    REQUIRE(fleet.wait_for_workers(1));
    auto r = fleet.cli({"run", "gpu", "probe"});
    CHECK(r.exit_code == 125);
    CHECK(r.err.find("NO_CAPABLE_WORKER") != std::string::npos);
    CHECK(r.err.find("--grant gpu") != std::string::npos);
  }
  SECTION("no worker connected at all: the task fails NO_CAPABLE_WORKER naming the plugin") {
    FleetOptions none(0, 1, {});
    none.broker_args = options.broker_args;
    Fleet fleet(none);
    auto sub = fleet.cli({"submit", "hello", "greet"});
    REQUIRE(sub.exit_code == 0);
    auto id = trim(sub.out);
    REQUIRE(fleet.wait_for_terminal(id, 30s) == "failed");
    auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
    CHECK(st["outcome"]["error"]["code"] == "NO_CAPABLE_WORKER");
    CHECK(st["outcome"]["error"]["message"].get<std::string>().find("'hello'") != std::string::npos);
  }
  SECTION("a capable worker joining before the deadline runs the waiting task") {
    options.broker_args = {"--no-capable-worker-ms", "30000"};  // far beyond a worker's start-up
    Fleet fleet(options);
    REQUIRE(fleet.wait_for_workers(1));
    auto sub = fleet.cli({"submit", "gpu", "probe"});
    REQUIRE(sub.exit_code == 0);
    auto id = trim(sub.out);
    fleet.add_worker({"--grant", "gpu"});
    REQUIRE(fleet.wait_for_terminal(id, 30s) == "succeeded");
    auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
    CHECK(st["worker"] == "w1");
    auto tail = fleet.cli({"tail", id});
    CHECK(tail.out.find("running on a gpu worker") != std::string::npos);
  }
  SECTION("a worker granting it runs it") {
    Fleet fleet({1, 1, {"--grant", "gpu"}});
    REQUIRE(fleet.wait_for_workers(1));
    auto r = fleet.cli({"run", "gpu", "probe"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "running on a gpu worker\n");
  }
}

TEST_CASE("a plugin with sandbox: none runs only where the operator allows it", "[integration]") {
  SECTION("refused by default") {
    Fleet fleet({1, 1, {}});
    REQUIRE(fleet.wait_for_workers(1));
    auto r = fleet.cli({"run", "trusted", "hi"});
    CHECK(r.exit_code == 125);
    CHECK(r.err.find("PERMISSION_DENIED") != std::string::npos);
    CHECK(r.err.find("--allow-unsandboxed") != std::string::npos);
  }
  SECTION("run with --allow-unsandboxed, and the result records it") {
    Fleet fleet({1, 1, {"--allow-unsandboxed"}});
    REQUIRE(fleet.wait_for_workers(1));
    auto sub = fleet.cli({"submit", "trusted", "hi"});
    auto id = trim(sub.out);
    REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
    auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
    CHECK(st["outcome"]["layers"] == json::array({"none"}));
  }
}

TEST_CASE("higher-priority tasks are dispatched first", "[integration]") {
  Fleet fleet({1, 1, {}});  // one slot: the queue order decides
  REQUIRE(fleet.wait_for_workers(1));
  auto blocker = trim(fleet.cli({"submit", "stubborn", "hang", "--timeout", "60000"}).out);
  REQUIRE(!fleet.wait_until_running(blocker, 1).empty());
  auto low = trim(fleet.cli({"submit", "hello", "greet", "--priority", "0"}).out);
  auto high = trim(fleet.cli({"submit", "hello", "greet", "--priority", "10"}).out);
  REQUIRE(fleet.cli({"cancel", blocker}).exit_code == 0);
  REQUIRE(fleet.wait_for_terminal(low) == "succeeded");
  REQUIRE(fleet.wait_for_terminal(high) == "succeeded");
  auto l = json::parse(fleet.cli({"status", low, "--json"}).out);
  auto h = json::parse(fleet.cli({"status", high, "--json"}).out);
  // One slot: the low-priority task can only start once the high-priority one finished.
  CHECK(l["started_ms"].get<std::int64_t>() >= h["finished_ms"].get<std::int64_t>());
}

TEST_CASE("input can be read from a file with --input @file", "[integration]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  auto path = fleet.dir + "/input.json";
  {
    std::ofstream f(path);
    f << R"({"name":"from a file"})";
  }
  auto r = fleet.cli({"run", "hello", "greet", "--input", "@" + path});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("hello, from a file") != std::string::npos);
  auto missing = fleet.cli({"run", "hello", "greet", "--input", "@" + fleet.dir + "/nope.json"});
  CHECK(missing.exit_code == 65);
  CHECK(missing.err.find("nope.json") != std::string::npos);
}
