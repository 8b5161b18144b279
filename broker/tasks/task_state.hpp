#pragma once
// A task's state in one byte: an index into the protocol's state names (common/protocol/
// messages.hpp, namespace state). Compared and printed as those names, so call sites read like
// the protocol; only a name the protocol defines can be stored.
#include <cstdint>
#include <optional>
#include <string_view>

namespace kbfleet::broker {

class TaskState {
 public:
  TaskState() = default;  // queued
  // The state of that name; nullopt for anything the protocol does not define.
  static std::optional<TaskState> parse(std::string_view name);
  // For the protocol's own constants (state::kRunning, ...): aborts on any other name.
  static TaskState of(std::string_view name);

  std::string_view name() const;
  bool terminal() const;
  friend bool operator==(TaskState a, TaskState b) { return a.index_ == b.index_; }
  friend bool operator==(TaskState a, std::string_view name) { return a.name() == name; }

 private:
  explicit TaskState(std::uint8_t index) : index_(index) {}
  std::uint8_t index_ = 0;
};

}  // namespace kbfleet::broker
