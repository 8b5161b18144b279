#pragma once
// A task id as the broker holds it: the 128 random bits themselves, not their 32-character hex
// form. Used as the key of the task index and of queue entries, so neither allocates per task nor
// compares strings (docs/performance.md, memory per task). The hex form is what the wire shows.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kbfleet::broker {

struct TaskKey {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend bool operator==(const TaskKey&, const TaskKey&) = default;
};

// Ids are drawn at random by the broker (never chosen by a client), so their bits hash as is.
struct TaskKeyHash {
  std::size_t operator()(const TaskKey& k) const noexcept { return static_cast<std::size_t>(k.lo ^ k.hi); }
};

// 128 bits from getrandom, drawn 4 KiB at a time (one system call per 256 keys).
TaskKey new_task_key();
// The key of a 32-character lowercase hex id; nullopt for anything else.
std::optional<TaskKey> parse_task_key(std::string_view id);
std::string to_hex(const TaskKey& k);

// The hex form by value, without a heap allocation: a task stores only its key and spells its id
// when a message needs it. Use within one expression (`view()` points into this object).
class TaskIdHex {
 public:
  explicit TaskIdHex(const TaskKey& k);
  std::string_view view() const { return {text_, sizeof text_}; }
  std::string str() const { return std::string(view()); }

 private:
  char text_[32];
};

}  // namespace kbfleet::broker
