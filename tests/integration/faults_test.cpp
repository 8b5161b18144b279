// Lost and departing workers: retries, dead letters, graceful drain (real processes, kill -9).
#include <signal.h>

#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

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
