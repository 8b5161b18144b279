#pragma once
// Task key -> slot (TaskSlab) for the tasks a TaskStore holds: open addressing with linear
// probing over 16-byte entries, four to a cache line. Finding, adding or removing a task touches
// the one or two adjacent lines its key hashes to. std::unordered_map touched a bucket, the node
// before the bucket's chain and each node of the chain (to read its key), all at random places
// once a million tasks are queued (docs/performance.md, scale).
// An entry holds 96 of the key's 128 bits; the caller confirms a candidate slot with the task's
// full key (`is_it`), which it reads anyway.
#include <cstdint>
#include <memory>
#include <optional>

#include "broker/tasks/task_key.hpp"

namespace kbfleet::broker {

class TaskIndex {
 public:
  TaskIndex() = default;
  TaskIndex(const TaskIndex&) = delete;
  TaskIndex& operator=(const TaskIndex&) = delete;

  // The slot of `key`: the first entry matching its 96 bits for which `is_it(slot)` holds.
  template <class IsIt>
  std::optional<std::uint32_t> find(const TaskKey& key, const IsIt& is_it) const {
    if (size_ == 0) return std::nullopt;
    for (std::size_t i = home(key.lo);; i = (i + 1) & mask_) {
      const Entry& e = entries_[i];
      if (e.slot_plus_1 == 0) return std::nullopt;
      if (e.lo == key.lo && e.hi32 == static_cast<std::uint32_t>(key.hi) && is_it(e.slot_plus_1 - 1)) {
        return e.slot_plus_1 - 1;
      }
    }
  }
  // Adds key -> slot; the key must not be present.
  void insert(const TaskKey& key, std::uint32_t slot);
  // Removes the entry of `slot` (which holds `key`); false if there is none.
  bool erase(const TaskKey& key, std::uint32_t slot);

  std::size_t size() const { return size_; }
  template <class F>
  void for_each_slot(const F& f) const {
    for (std::size_t i = 0; size_ > 0 && i <= mask_; ++i) {
      if (entries_[i].slot_plus_1 != 0) f(entries_[i].slot_plus_1 - 1);
    }
  }

 private:
  struct Entry {
    std::uint64_t lo = 0;
    std::uint32_t hi32 = 0;
    std::uint32_t slot_plus_1 = 0;  // 0 = empty
  };
  // Fibonacci hashing of the low 64 bits: ids are random, but a multiply keeps any pattern from
  // clustering the probes.
  std::size_t home(std::uint64_t lo) const { return static_cast<std::size_t>((lo * 0x9E3779B97F4A7C15ULL) >> shift_); }
  void place(const Entry& e);
  void resize(std::size_t capacity);

  std::unique_ptr<Entry[]> entries_;
  std::size_t mask_ = 0;  // capacity - 1 (capacity a power of two; 0 while unallocated)
  int shift_ = 64;
  std::size_t size_ = 0;
};

}  // namespace kbfleet::broker
