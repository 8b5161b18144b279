// The worker's built-in noop plugin (--builtin-noop), through a real broker and worker.
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/fleet.hpp"

using namespace kbfleet::test;
using nlohmann::json;

TEST_CASE("a worker started with --builtin-noop runs kbfleet.noop tasks in-process and echoes the input",
          "[integration][noop]") {
  Fleet fleet({1, 1, {"--builtin-noop"}});
  REQUIRE(fleet.wait_for_workers(1));

  auto workers = json::parse(fleet.cli({"workers", "--json"}).out);
  bool offered = false;
  for (const auto& p : workers[0]["plugins"]) {
    if (p["id"] == "kbfleet.noop") offered = p["handlers"] == json::array({"noop"});
  }
  CHECK(offered);

  auto sub = fleet.cli({"submit", "kbfleet.noop", "noop", "--input", R"({"n":7})"});
  REQUIRE(sub.exit_code == 0);
  auto id = trim(sub.out);
  REQUIRE(fleet.wait_for_terminal(id) == "succeeded");
  auto st = json::parse(fleet.cli({"status", id, "--json"}).out);
  CHECK(st["outcome"]["exit_code"] == 0);
  CHECK(st["outcome"]["result"] == json::parse(R"({"n":7})"));
  CHECK(st["outcome"]["layers"] == json::array());  // no sandbox, no process
  CHECK(st["events"] == 2);                          // started, done: the handler writes nothing

  auto run = fleet.cli({"run", "kbfleet.noop", "noop"});
  CHECK(run.exit_code == 0);
  CHECK(run.out.empty());
}

TEST_CASE("without --builtin-noop a worker does not offer kbfleet.noop", "[integration][noop]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  auto r = fleet.cli({"submit", "kbfleet.noop", "noop"});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("PLUGIN_NOT_FOUND") != std::string::npos);
}

TEST_CASE("a kbfleet.noop task with another handler name is refused", "[integration][noop]") {
  Fleet fleet({1, 1, {"--builtin-noop"}});
  REQUIRE(fleet.wait_for_workers(1));
  auto r = fleet.cli({"submit", "kbfleet.noop", "other"});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("HANDLER_NOT_FOUND") != std::string::npos);
}

TEST_CASE("a worker with --builtin-noop refuses to start next to a plugin that uses the reserved id", "[integration][noop]") {
  const std::string dir = make_temp_dir();
  std::filesystem::create_directories(dir + "/plugins/kbfleet.noop/bin");
  {
    std::ofstream m(dir + "/plugins/kbfleet.noop/kbfleet.yaml");
    m << "id: kbfleet.noop\nversion: 1.0.0\nhandlers:\n  noop: { exec: bin/ok.sh }\n";
    std::ofstream s(dir + "/plugins/kbfleet.noop/bin/ok.sh");
    s << "#!/bin/sh\n";
  }
  std::filesystem::permissions(dir + "/plugins/kbfleet.noop/bin/ok.sh", std::filesystem::perms::owner_all);
  auto r = run_command({bin("kbfleet-worker"), "--broker", "tcp://127.0.0.1:1", "--plugins", dir + "/plugins", "--work",
                        dir + "/work", "--metrics", "", "--builtin-noop"},
                       20s);
  CHECK(r.exit_code == 78);
  CHECK(r.err.find("reserves") != std::string::npos);
  std::filesystem::remove_all(dir);
}
