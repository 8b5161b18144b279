// TaskRun buffers a handler's output as events and hands them to the worker loop in batches.
#include <catch2/catch.hpp>

#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"
#include "worker/task/task_run.hpp"

using namespace kbfleet;

namespace {

// The `line` numbers of the output events in a task_events body.
std::vector<std::int64_t> lines_of(const std::string& body) {
  auto b = protocol::Body::decode(body);
  REQUIRE(b);
  auto events = b->view().array_or_empty("events");
  REQUIRE(events);
  std::vector<std::int64_t> lines;
  for (const auto* e : *events) {
    auto data = protocol::MapView(e).map_or_none("data");
    REQUIRE(data);
    REQUIRE(*data);
    lines.push_back((*data)->i64_or("line", -1));
  }
  return lines;
}

}  // namespace

TEST_CASE("a flush of more events than the broker takes per message comes in batches, in order, none lost",
          "[worker][task_run]") {
  protocol::TaskAssignment task;
  task.task_id = std::string(32, 'a');
  worker::TaskRun run(task);
  const std::int64_t n = 2 * static_cast<std::int64_t>(protocol::kMaxEventsPerBatch) + 5000;
  for (std::int64_t i = 1; i <= n; ++i) run.on_output({worker::Stream::kStdout, i, "line", false});
  REQUIRE(run.pending_events() == static_cast<std::size_t>(n));

  std::vector<std::size_t> sizes;
  std::int64_t expected = 1;
  while (run.pending_events() > 0) {
    auto lines = lines_of(run.take_events());
    sizes.push_back(lines.size());
    for (auto l : lines) CHECK(l == expected++);
  }
  CHECK(sizes == std::vector<std::size_t>{protocol::kMaxEventsPerBatch, protocol::kMaxEventsPerBatch, 5000});
  CHECK(expected == n + 1);
  CHECK(run.take_events().empty());
}

TEST_CASE("take_events honours a smaller batch size", "[worker][task_run]") {
  protocol::TaskAssignment task;
  task.task_id = std::string(32, 'b');
  worker::TaskRun run(task);
  for (std::int64_t i = 1; i <= 5; ++i) run.on_output({worker::Stream::kStderr, i, "x", false});
  CHECK(lines_of(run.take_events(2)) == std::vector<std::int64_t>{1, 2});
  CHECK(lines_of(run.take_events(2)) == std::vector<std::int64_t>{3, 4});
  CHECK(lines_of(run.take_events(2)) == std::vector<std::int64_t>{5});
  CHECK(run.pending_events() == 0);
}
