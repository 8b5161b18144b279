#include "broker/tasks/task_state.hpp"

#include <array>

#include "common/errors/error.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

namespace {
namespace state = protocol::state;
// Index 0 is the default (a new task is queued).
constexpr std::array<std::string_view, 8> kNames{state::kQueued,    state::kRunning,  state::kSucceeded,
                                                  state::kFailed,    state::kCancelled, state::kTimedOut,
                                                  state::kRetrying,  state::kDeadLetter};
}  // namespace

std::optional<TaskState> TaskState::parse(std::string_view name) {
  for (std::size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return TaskState(static_cast<std::uint8_t>(i));
  }
  return std::nullopt;
}

TaskState TaskState::of(std::string_view name) {
  auto s = parse(name);
  KB_CHECK(s.has_value());  // only called with the protocol's constants
  return *s;
}

std::string_view TaskState::name() const { return kNames[index_]; }

bool TaskState::terminal() const { return state::is_terminal(name()); }

}  // namespace kbfleet::broker
