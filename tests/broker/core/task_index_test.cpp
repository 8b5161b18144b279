// TaskIndex: open addressing of task keys to slots, growth, shrinking and removal without
// tombstones (broker/tasks/task_index.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "broker/tasks/task_index.hpp"

namespace kbfleet::broker {
namespace {

// The index as a TaskStore uses it: slots into a table of full keys.
struct Indexed {
  TaskIndex index;
  std::vector<TaskKey> keys;  // slot -> key

  std::uint32_t add(const TaskKey& key) {
    const auto slot = static_cast<std::uint32_t>(keys.size());
    keys.push_back(key);
    index.insert(key, slot);
    return slot;
  }
  std::optional<std::uint32_t> find(const TaskKey& key) const {
    return index.find(key, [&](std::uint32_t s) { return keys[s] == key; });
  }
};

}  // namespace

TEST_CASE("the index finds every key it holds and nothing else", "[broker][tasks]") {
  Indexed x;
  CHECK_FALSE(x.find(new_task_key()));  // empty, nothing allocated
  std::vector<TaskKey> added;
  for (int i = 0; i < 5000; ++i) {
    added.push_back(new_task_key());
    x.add(added.back());
  }
  CHECK(x.index.size() == 5000);
  for (std::uint32_t s = 0; s < added.size(); ++s) CHECK(x.find(added[s]) == s);
  for (int i = 0; i < 1000; ++i) CHECK_FALSE(x.find(new_task_key()));
}

TEST_CASE("keys alike in the 96 bits an entry keeps are told apart by the full key", "[broker][tasks]") {
  Indexed x;
  const TaskKey a{0x1111222233334444ULL, 0xaaaabbbbccccddddULL};
  const TaskKey b{0x9999222233334444ULL, 0xaaaabbbbccccddddULL};  // differs only in the high 32 bits of hi
  x.add(a);
  x.add(b);
  CHECK(x.find(a) == 0u);
  CHECK(x.find(b) == 1u);
  CHECK(x.index.erase(a, 0));
  CHECK_FALSE(x.find(a));
  CHECK(x.find(b) == 1u);
}

TEST_CASE("removing keys keeps the others findable as the index grows and shrinks", "[broker][tasks]") {
  // Random removals move entries back into the holes they leave; check against a std::map.
  Indexed x;
  std::map<std::uint32_t, TaskKey> present;
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    if (present.empty() || rng() % 3 != 0) {
      const TaskKey key = new_task_key();
      present.emplace(x.add(key), key);
    } else {
      auto it = present.begin();
      std::advance(it, static_cast<long>(rng() % present.size()));
      CHECK(x.index.erase(it->second, it->first));
      CHECK_FALSE(x.index.erase(it->second, it->first));  // once only
      present.erase(it);
    }
  }
  CHECK(x.index.size() == present.size());
  for (const auto& [slot, key] : present) CHECK(x.find(key) == slot);
  // Drain to a handful: the index shrinks and still holds exactly those.
  while (present.size() > 3) {
    CHECK(x.index.erase(present.begin()->second, present.begin()->first));
    present.erase(present.begin());
  }
  for (const auto& [slot, key] : present) CHECK(x.find(key) == slot);
  std::vector<std::uint32_t> slots;
  x.index.for_each_slot([&](std::uint32_t s) { slots.push_back(s); });
  std::sort(slots.begin(), slots.end());
  std::vector<std::uint32_t> expected;
  for (const auto& [slot, key] : present) expected.push_back(slot);
  CHECK(slots == expected);
}

TEST_CASE("keys whose homes collide stay findable after removals in the middle of their run", "[broker][tasks]") {
  // Same low 64 bits and the same low half of the high ones: one home, one run of probes, and
  // entries that only the full key tells apart. Remove from the run's middle and its start.
  Indexed x;
  for (std::uint64_t i = 0; i < 12; ++i) x.add(TaskKey{i << 32, 0x5555555555555555ULL});
  for (std::uint32_t s = 0; s < 12; ++s) CHECK(x.find(x.keys[s]) == s);
  CHECK(x.index.erase(x.keys[4], 4));
  CHECK(x.index.erase(x.keys[0], 0));
  for (std::uint32_t s = 0; s < 12; ++s) {
    INFO("slot " << s);
    if (s == 4 || s == 0) {
      CHECK_FALSE(x.find(x.keys[s]));
    } else {
      CHECK(x.find(x.keys[s]) == s);
    }
  }
}

}  // namespace kbfleet::broker
