#pragma once
// Pending tasks keyed by what they need ("plugin@version", version empty = any), ordered by
// priority (higher first) then submission order. Dispatch cost does not grow with queue length:
// push and pop are O(log n) per key; a worker scans only the keys it serves.
// Cancelled tasks are removed lazily: pop_best() skips ids the caller reports as gone.
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

namespace kbfleet::broker {

std::string queue_key(std::string_view plugin, std::string_view version);

class TaskQueue {
 public:
  void push(const std::string& key, std::int64_t priority, const std::string& task_id);
  // The best head among `keys` for which `alive(task_id)` holds; stale heads are discarded.
  std::optional<std::string> pop_best(const std::vector<std::string>& keys,
                                      const std::function<bool(const std::string&)>& alive);
  // Removes and returns the ids of `key` for which `take(task_id)` holds (O(n) for that key).
  std::vector<std::string> take_if(const std::string& key, const std::function<bool(const std::string&)>& take);
  // Keys holding at least one entry (possibly a not yet discarded cancelled one).
  std::vector<std::string> keys() const;
  std::size_t size() const { return size_; }  // includes not yet discarded cancelled entries
  bool empty_for(const std::string& key) const;

 private:
  struct Entry {
    std::int64_t priority;
    std::uint64_t order;
    std::string task_id;
    bool operator<(const Entry& o) const {  // std::priority_queue is a max-heap
      if (priority != o.priority) return priority < o.priority;
      return order > o.order;
    }
  };
  std::unordered_map<std::string, std::priority_queue<Entry>> queues_;
  std::uint64_t next_order_ = 0;
  std::size_t size_ = 0;
};

}  // namespace kbfleet::broker
