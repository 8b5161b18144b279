// The broker's journal across restarts (real processes, kill -9 and SIGTERM of the broker):
// queued tasks are recovered, running ones are re-attached by their worker, idempotency keys and
// outcomes survive, SIGTERM commits and exits 0.
#include <signal.h>

#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/fleet.hpp"

using namespace kbfleet::test;
using nlohmann::json;

namespace {

// kill -9 of the broker, then a new one on the same port and --data.
void crash_and_restart(Fleet& fleet) {
  const std::string bind = fleet.broker;
  fleet.stop_broker();
  fleet.start_broker(bind);
}

json status_of(const Fleet& fleet, const std::string& id) {
  auto r = fleet.cli({"status", id, "--json"}, 20s);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

// A worker like the fleet's own, started later (the fleet's constructor starts them at once).
void add_worker(Fleet& fleet) {
  const std::string n = std::to_string(fleet.workers.size());
  fleet.workers.push_back(std::make_unique<Daemon>(
      std::vector<std::string>{bin("kbfleet-worker"), "--broker", fleet.broker, "--plugins", fleet.dir + "/plugins",
                               "--slots", "2", "--work", fleet.dir + "/work-" + n, "--metrics", "127.0.0.1:0",
                               "--worker-id", "w" + n, "--heartbeat-ms", "200", "--kill-grace-ms", "300"},
      fleet.dir + "/worker-" + n + ".log"));
  REQUIRE(!fleet.workers.back()->wait_for_key("metrics", 10s).empty());
}

}  // namespace

TEST_CASE("queued tasks survive a kill -9 of the broker and run once a worker comes", "[integration][journal]") {
  Fleet fleet({0, 1, {}});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = fleet.cli({"submit", "hello", "greet", "--input", R"({"name":"j)" + std::to_string(i) + R"("})"});
    REQUIRE(r.exit_code == 0);
    ids.push_back(trim(r.out));
  }
  crash_and_restart(fleet);
  for (const auto& id : ids) CHECK(status_of(fleet, id)["state"] == "queued");

  add_worker(fleet);
  for (const auto& id : ids) {
    CHECK(fleet.wait_for_terminal(id) == "succeeded");
    CHECK(status_of(fleet, id)["attempt"] == 1);
  }
}

TEST_CASE("a task running while the broker is killed is re-attached by its worker and completes once",
          "[integration][journal]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  auto id = trim(fleet.cli({"submit", "slow", "sleep", "--input", R"({"ticks":20})"}).out);
  REQUIRE(fleet.wait_until_running(id) == "w0");
  crash_and_restart(fleet);

  CHECK(fleet.wait_for_terminal(id) == "succeeded");
  auto st = status_of(fleet, id);
  CHECK(st["attempt"] == 1);  // re-attached, not retried
  CHECK(st["worker"] == "w0");
  // The replay after the restart starts where the journal left off and ends with one done.
  auto tail = fleet.cli({"tail", id, "--json"}, 30s);
  REQUIRE(tail.exit_code == 0);
  int done = 0, retries = 0;
  std::istringstream lines(tail.out);
  for (std::string line; std::getline(lines, line);) {
    auto e = json::parse(line);
    done += e["type"] == "done";
    retries += e["type"] == "retry";
  }
  CHECK(done == 1);
  CHECK(retries == 0);
  auto worker = run_command({"/bin/sh", "-c", "curl -sf http://" + fleet.worker_metrics[0] + "/metrics"}, 10s);
  CHECK(worker.out.find("kbfleet_worker_tasks_started_total 1\n") != std::string::npos);
}

TEST_CASE("an idempotency key and a finished task's outcome survive a broker restart", "[integration][journal]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  auto first = fleet.cli({"submit", "hello", "greet", "--idempotency-key", "nightly-1"});
  REQUIRE(first.exit_code == 0);
  auto id = trim(first.out);
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
  crash_and_restart(fleet);

  auto again = fleet.cli({"submit", "hello", "greet", "--idempotency-key", "nightly-1"});
  REQUIRE(again.exit_code == 0);
  CHECK(trim(again.out) == id);
  auto st = status_of(fleet, id);
  CHECK(st["state"] == "succeeded");
  CHECK(st["outcome"]["exit_code"] == 0);
  // `tail` of a recovered finished task replays its done event and exits with its status.
  CHECK(fleet.cli({"tail", id}, 20s).exit_code == 0);
}

TEST_CASE("SIGTERM makes the broker flush its journal and exit 0, and the next broker has the tasks",
          "[integration][journal]") {
  Fleet fleet({0, 1, {}});
  auto id = trim(fleet.cli({"submit", "hello", "greet"}).out);
  REQUIRE(!id.empty());
  const std::string bind = fleet.broker;
  fleet.broker_process->signal(SIGTERM);
  CHECK(fleet.broker_process->wait(10s) == 0);
  auto log = read_file(fleet.dir + "/broker.log");
  CHECK(log.find("broker draining: refusing new submissions") != std::string::npos);
  CHECK(log.find("broker stopped journal=flushed queued=1") != std::string::npos);

  fleet.start_broker(bind);
  CHECK(status_of(fleet, id)["state"] == "queued");
  CHECK(read_file(fleet.dir + "/broker.log").find("journal recovered") != std::string::npos);
}

TEST_CASE("the broker keeps at most --retention-max-tasks finished tasks, in memory and in the journal",
          "[integration][journal]") {
  FleetOptions options(1, 1, {});
  options.broker_args = {"--retention-max-tasks", "3"};
  Fleet fleet(options);
  REQUIRE(fleet.wait_for_workers(1));
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto r = fleet.cli({"submit", "hello", "greet", "--input", R"({"name":"r)" + std::to_string(i) + R"("})"});
    REQUIRE(r.exit_code == 0);
    ids.push_back(trim(r.out));
    REQUIRE(fleet.wait_for_terminal(ids.back()) == "succeeded");  // one at a time: finish order is known
  }
  auto unknown = [&](const std::string& id) { return fleet.cli({"status", id, "--json"}, 20s).exit_code != 0; };
  // Forgotten on the broker's timer tick (--heartbeat-ms), well inside --retention-ms.
  REQUIRE(eventually([&] { return unknown(ids[0]) && unknown(ids[1]) && unknown(ids[2]); }, 20s));
  for (int i = 3; i < 6; ++i) CHECK(status_of(fleet, ids[i])["state"] == "succeeded");
  CHECK(scrape_metric(fleet.broker_metrics, "kbfleet_broker_journal_compacted_total") == 3);

  // Their rows left the journal with them: the next broker recovers the three newest only.
  crash_and_restart(fleet);
  CHECK(read_file(fleet.dir + "/broker.log").find("queued=0 running=0 finished=3 ") != std::string::npos);
  for (int i = 0; i < 3; ++i) CHECK(unknown(ids[i]));
  for (int i = 3; i < 6; ++i) CHECK(status_of(fleet, ids[i])["state"] == "succeeded");
}

TEST_CASE("issue 6: a second broker process on the same --data exits 78 while the first holds the journal",
          "[integration][journal]") {
  // The lock is the unix-excl VFS's fcntl lock on journal.db, held by the first broker's process
  // (the in-process claim cannot see another process): a second one must not become a writer.
  Fleet fleet({0, 1, {}});
  auto r = run_command({bin("kbfleet-broker"), "--bind", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                        "--data", fleet.dir + "/data", "--durability", "batch"},
                       20s);
  INFO(r.err);
  CHECK(r.exit_code == 78);
  CHECK(r.err.find("another kbfleet-broker") != std::string::npos);
  // The first broker still works and still journals.
  auto submitted = fleet.cli({"submit", "hello", "greet", "--input", R"({"name":"second"})"}, 20s);
  INFO(submitted.err);
  CHECK(submitted.exit_code == 0);
}
