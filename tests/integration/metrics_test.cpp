// /metrics of the real broker and worker, scraped over HTTP and checked with promtool.
#include <catch2/catch.hpp>

#include "tests/support/fleet.hpp"

using namespace kbfleet::test;

namespace {

CommandResult scrape_and_check(const std::string& address) {
  return run_command({"/bin/sh", "-c", "curl -sf http://" + address + "/metrics | tee /dev/stderr | promtool check metrics"}, 30s);
}

}  // namespace

TEST_CASE("broker and worker /metrics pass promtool and count the work done", "[integration][metrics]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  REQUIRE(fleet.cli({"run", "hello", "greet"}).exit_code == 0);
  REQUIRE(fleet.cli({"run", "fail", "exit3"}).exit_code == 3);

  auto broker = scrape_and_check(fleet.broker_metrics);
  INFO(broker.out);
  CHECK(broker.exit_code == 0);
  CHECK(broker.err.find("kbfleet_broker_tasks_submitted_total 2") != std::string::npos);
  CHECK(broker.err.find("kbfleet_broker_tasks_finished_total{code=\"HANDLER_FAILED\",state=\"failed\"} 1") != std::string::npos);
  CHECK(broker.err.find("kbfleet_broker_workers 1") != std::string::npos);
  CHECK(broker.err.find("kbfleet_broker_task_queue_wait_seconds_count 2") != std::string::npos);

  auto worker = scrape_and_check(fleet.worker_metrics[0]);
  INFO(worker.out);
  CHECK(worker.exit_code == 0);
  CHECK(worker.err.find("kbfleet_worker_tasks_started_total 2") != std::string::npos);
  CHECK(worker.err.find("kbfleet_worker_slots 1") != std::string::npos);
}

TEST_CASE("the worker's busy-slot gauge counts running tasks, not results waiting for their ack", "[integration][metrics]") {
  Fleet fleet({1, 2, {}});
  REQUIRE(fleet.wait_for_workers(1));
  const std::string busy = "kbfleet_worker_slots_busy";
  CHECK(scrape_metric(fleet.worker_metrics[0], busy) == 0);

  auto sub = fleet.cli({"submit", "stubborn", "hang", "--timeout", "60000"});
  REQUIRE(sub.exit_code == 0);
  const auto id = trim(sub.out);
  REQUIRE(!fleet.wait_until_running(id).empty());
  CHECK(scrape_metric(fleet.worker_metrics[0], busy) == 1);

  // Two quick tasks beside it come and go; the hanging one still holds its slot.
  REQUIRE(fleet.cli({"run", "hello", "greet"}).exit_code == 0);
  REQUIRE(fleet.cli({"run", "hello", "greet"}).exit_code == 0);
  CHECK(scrape_metric(fleet.worker_metrics[0], busy) == 1);

  // The gauge is set when the result is sent, before the broker can publish `done`.
  REQUIRE(fleet.cli({"cancel", id}).exit_code == 0);
  REQUIRE(fleet.wait_for_terminal(id) == "cancelled");
  CHECK(scrape_metric(fleet.worker_metrics[0], busy) == 0);
}
