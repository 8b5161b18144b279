#include "broker/tasks/task_index.hpp"

#include "common/errors/error.hpp"

namespace kbfleet::broker {

namespace {
constexpr std::size_t kMinCapacity = 16;
}  // namespace

void TaskIndex::insert(const TaskKey& key, std::uint32_t slot) {
  KB_CHECK(slot != UINT32_MAX);
  const std::size_t capacity = entries_ ? mask_ + 1 : 0;
  // At most 3/4 full: linear probing's runs stay a line or two long.
  if ((size_ + 1) * 4 > capacity * 3) resize(capacity == 0 ? kMinCapacity : capacity * 2);
  place(Entry{key.lo, static_cast<std::uint32_t>(key.hi), slot + 1});
  ++size_;
}

bool TaskIndex::erase(const TaskKey& key, std::uint32_t slot) {
  if (size_ == 0) return false;
  std::size_t hole = home(key.lo);
  for (;; hole = (hole + 1) & mask_) {
    const Entry& e = entries_[hole];
    if (e.slot_plus_1 == 0) return false;
    if (e.slot_plus_1 == slot + 1) break;
  }
  // Backward shift: later entries of the run that may live in the hole move into it, so no
  // tombstones lengthen later probes.
  for (std::size_t next = (hole + 1) & mask_;; next = (next + 1) & mask_) {
    const Entry& e = entries_[next];
    if (e.slot_plus_1 == 0) break;
    const std::size_t from_home = (next - home(e.lo)) & mask_;
    if (from_home >= ((next - hole) & mask_)) {
      entries_[hole] = e;
      hole = next;
    }
  }
  entries_[hole] = Entry{};
  --size_;
  // Shrink once 1/8 full, so a drained burst of a million tasks gives its memory back.
  const std::size_t capacity = mask_ + 1;
  if (capacity > kMinCapacity && size_ * 8 < capacity) resize(capacity / 2);
  return true;
}

void TaskIndex::place(const Entry& e) {
  std::size_t i = home(e.lo);
  while (entries_[i].slot_plus_1 != 0) i = (i + 1) & mask_;
  entries_[i] = e;
}

void TaskIndex::resize(std::size_t capacity) {
  auto old = std::move(entries_);
  const std::size_t old_capacity = old ? mask_ + 1 : 0;
  entries_ = std::make_unique<Entry[]>(capacity);
  mask_ = capacity - 1;
  shift_ = 64;
  for (std::size_t c = capacity; c > 1; c >>= 1) --shift_;
  for (std::size_t i = 0; i < old_capacity; ++i) {
    if (old[i].slot_plus_1 != 0) place(old[i]);
  }
}

}  // namespace kbfleet::broker
