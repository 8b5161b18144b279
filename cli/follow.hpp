#pragma once
// Following a task's events in order from seq 1 to `done` with none missing. PUB/SUB drops
// silently (slow joiner, high-water mark), so the follower treats the SUB stream as a hint:
// it replays from the broker's per-task backlog first, delivers live events whose seq is the
// next expected one, refetches any gap from the backlog, and re-polls the backlog when the
// stream is quiet. Delivered events are therefore exactly seq 1..done, in order, once each.
#include <functional>
#include <string>

#include "cli/client.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::cli {

struct FollowHooks {
  std::function<void(const protocol::Event&)> on_event;
  // Called once on the first readable byte of interrupt_fd (e.g. SIGINT via signalfd); a
  // second interrupt stops following with CANCELLED.
  std::function<void()> on_interrupt;
  int interrupt_fd = -1;
};

// Returns the `done` event. TASK_NOT_FOUND, BROKER_UNREACHABLE or CANCELLED (second interrupt).
[[nodiscard]] Result<protocol::Event> follow(Client& client, const std::string& task_id, const FollowHooks& hooks);

}  // namespace kbfleet::cli
