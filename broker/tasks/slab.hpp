#pragma once
// Objects at addresses that never change, in fixed chunks, their slots reused through a free
// list. Holds a TaskStore's tasks: a reference to a Task stays valid until the task is erased,
// and a task costs no allocation of its own (no malloc header, no map node); the slots of tasks
// created one after another sit next to each other (docs/performance.md, scale).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::broker {

template <class T>
class Slab {
 public:
  static constexpr std::uint32_t kChunkSlots = 4096;

  Slab() = default;
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;
  ~Slab() {
    // Which slots hold an object: every slot handed out and not on the free list.
    std::vector<bool> free(used_, false);
    for (std::uint32_t s : free_) free[s] = true;
    for (std::uint32_t s = 0; s < used_; ++s) {
      if (!free[s]) (*this)[s].~T();
    }
  }

  // A default-constructed T in a free slot; returns the slot.
  std::uint32_t emplace() {
    std::uint32_t s;
    if (!free_.empty()) {
      s = free_.back();
      free_.pop_back();
    } else {
      KB_CHECK(used_ < UINT32_MAX - 1);
      if (used_ % kChunkSlots == 0) chunks_.push_back(std::unique_ptr<Slot[]>(new Slot[kChunkSlots]));
      s = used_++;
    }
    new (raw(s)) T();
    return s;
  }
  // Destroys the object in `slot`; the slot is reused.
  void erase(std::uint32_t slot) {
    (*this)[slot].~T();
    free_.push_back(slot);
  }
  T& operator[](std::uint32_t slot) { return *std::launder(reinterpret_cast<T*>(raw(slot))); }
  const T& operator[](std::uint32_t slot) const {
    return *std::launder(reinterpret_cast<const T*>(const_cast<Slab*>(this)->raw(slot)));
  }

 private:
  struct Slot {
    alignas(T) std::byte bytes[sizeof(T)];
  };
  std::byte* raw(std::uint32_t slot) { return chunks_[slot / kChunkSlots][slot % kChunkSlots].bytes; }

  std::vector<std::unique_ptr<Slot[]>> chunks_;
  std::vector<std::uint32_t> free_;
  std::uint32_t used_ = 0;  // slots handed out so far (the free ones included)
};

}  // namespace kbfleet::broker
