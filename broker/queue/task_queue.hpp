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
      auto level = levels_.find(priority);
      if (level == levels_.end()) {
        if (spare_) {  // the node (and the FIFO's buffer) of a level that emptied: no allocation
          spare_.key() = priority;
          level = levels_.insert(std::move(spare_)).position;
        } else {
          level = levels_.try_emplace(priority).first;
        }
      }
      level->second.emplace_back(order, task);
    }
    void pop() {
      auto level = levels_.begin();
      level->second.pop_front();
      if (level->second.empty()) spare_ = levels_.extract(level);
    }
    // Removes the tasks for which `take` holds, in queue order; returns them.
    std::vector<TaskKey> take_if(const Alive& take);

   private:
    // 24 bytes per queued task: submission order and the task's key, nothing on the heap.
    using LevelMap = std::map<std::int64_t, std::deque<std::pair<std::uint64_t, TaskKey>>, std::greater<>>;
    LevelMap levels_;
    // A queue that empties and fills again (the usual state when workers keep up) would free
    // and allocate a level every task; the last emptied one is kept for the next push instead.
    LevelMap::node_type spare_;
  };
  struct TenantQueues {
    std::unordered_map<std::string, Levels> by_key;
    std::size_t size = 0;
  };
  void removed(const std::string& tenant, const std::string& key, std::size_t n);
  void drop_from_ring(const std::string& tenant);

  // Emptied keys and tenants keep their entries (and buffers), so a queue that keeps draining
  // does not allocate per task, up to this many idle ones; beyond it they are erased, so made-up
  // plugin ids queued while no worker is connected cannot grow the maps for good.
  static constexpr std::size_t kMaxIdleEntries = 64;

  std::unordered_map<std::string, TenantQueues> tenants_;
  std::deque<std::string> ring_;  // tenants with entries, least recently served first
  std::unordered_map<std::string, std::size_t> key_sizes_;  // 0 = idle (kept, see above)
  std::uint64_t next_order_ = 0;
  std::size_t size_ = 0;
};

}  // namespace kbfleet::broker
