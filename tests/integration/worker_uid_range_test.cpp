// Two workers on one host never share task uids (worker/sandbox/uid_range_lock.hpp): a second
// worker asking for a range another holds exits 78 naming the holder, and a worker without
// --task-uid-base takes a free range of its own. Real workers, real broker.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "tests/support/fleet.hpp"

namespace kbfleet::test {

TEST_CASE("a second worker asking for task uids another worker holds exits 78 naming it", "[integration][sandbox]") {
  if (::geteuid() != 0) {
    WARN("SKIPPED: task uid ranges are held by root workers only");
    return;
  }
  // Explicit ranges far from the automatic ones (200000 + k * 4096), used by no other test.
  const std::string base = "3500000";
  Fleet fleet({0, 2, {}});  // workers added below: only the first asks for the explicit range
  fleet.add_worker({"--task-uid-base", base});
  REQUIRE(fleet.wait_for_workers(1));

  auto second = run_command({bin("kbfleet-worker"), "--broker", fleet.broker, "--plugins", fleet.dir + "/plugins",
                             "--work", fleet.dir + "/work-second", "--metrics", "", "--task-uid-base", base,
                             "--slots", "1"},
                            20s);
  CHECK(second.exit_code == 78);
  CHECK(second.err.find("task uids 3500000-3500000") != std::string::npos);
  CHECK(second.err.find("in use by another kbfleet-worker on this host (pid " +
                        std::to_string(fleet.workers[0]->pid()) + ")") != std::string::npos);

  // Without the flag, a worker takes a free automatic range and joins.
  fleet.add_worker();
  CHECK(fleet.wait_for_workers(2));
}

}  // namespace kbfleet::test
