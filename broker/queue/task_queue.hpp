#pragma once
// Pending tasks keyed by what they need ("plugin@version", version empty = any), per tenant.
// Within one tenant, tasks leave by priority (higher first) then submission order. Across
// tenants, a worker is served round robin: the tenant served least recently that has a task the
// worker can run goes first, so one tenant's flood cannot starve another tenant's single task
// (priorities order a tenant's own tasks; they do not let one tenant overtake another).
// Dispatch cost does not grow with queue length: push and pop are O(1) per key (a FIFO per
// priority level; O(log levels) to find the level), and a pop
// looks at O(tenants x keys the worker serves) queue heads, never at every task.
// Cancelled tasks are removed lazily: pop_best() skips ids the caller reports as gone.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/tasks/task_key.hpp"

namespace kbfleet::broker {

std::string queue_key(std::string_view plugin, std::string_view version);

inline constexpr const char* kDefaultTenant = "default";

class TaskQueue {
 public:
  using Alive = std::function<bool(const TaskKey&)>;
  void push(const std::string& key, std::int64_t priority, const TaskKey& task,
            const std::string& tenant = kDefaultTenant);
  // The next task among `keys` for which `alive(task)` holds, from the least recently served
  // tenant for which `eligible(tenant)` holds (null = every tenant); stale heads are discarded.
  std::optional<TaskKey> pop_best(const std::vector<std::string>& keys, const Alive& alive,
                                  const std::function<bool(const std::string&)>& eligible = nullptr);
  // Removes and returns the tasks of `key` for which `take(task)` holds (O(n) for that key).
  std::vector<TaskKey> take_if(const std::string& key, const Alive& take);
  // Keys holding at least one entry (possibly a not yet discarded cancelled one).
  std::vector<std::string> keys() const;
  std::size_t size() const { return size_; }  // includes not yet discarded cancelled entries
  bool empty_for(const std::string& key) const;

 private:
  struct Entry {
    std::int64_t priority;
    std::uint64_t order;
    const TaskKey* task;
    bool operator<(const Entry& o) const {  // "runs later than": lower priority, then newer
      if (priority != o.priority) return priority < o.priority;
      return order > o.order;
    }
  };
  // One key's tasks: a FIFO per priority level, highest level first. Push and pop are O(1) in the
  // queue's length (O(log levels)); a deep queue of one priority is a plain deque.
  class Levels {
   public:
    bool empty() const { return levels_.empty(); }
    Entry top() const {
      const auto& [priority, fifo] = *levels_.begin();
      return Entry{priority, fifo.front().first, &fifo.front().second};
    }
    void push(std::int64_t priority, std::uint64_t order, const TaskKey& task) {
      levels_[priority].emplace_back(order, task);
    }
    void pop() {
      auto level = levels_.begin();
      level->second.pop_front();
      if (level->second.empty()) levels_.erase(level);
    }
    // Removes the tasks for which `take` holds, in queue order; returns them.
    std::vector<TaskKey> take_if(const Alive& take);

   private:
    // 24 bytes per queued task: submission order and the task's key, nothing on the heap.
    std::map<std::int64_t, std::deque<std::pair<std::uint64_t, TaskKey>>, std::greater<>> levels_;
  };
  struct TenantQueues {
    std::unordered_map<std::string, Levels> by_key;
    std::size_t size = 0;
  };
  void removed(const std::string& tenant, const std::string& key, std::size_t n);

  std::unordered_map<std::string, TenantQueues> tenants_;
  std::deque<std::string> ring_;  // tenants with entries, least recently served first
  std::unordered_map<std::string, std::size_t> key_sizes_;
  std::uint64_t next_order_ = 0;
  std::size_t size_ = 0;
};

}  // namespace kbfleet::broker
