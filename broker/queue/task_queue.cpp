#include "broker/queue/task_queue.hpp"

#include <algorithm>

namespace kbfleet::broker {

std::string queue_key(std::string_view plugin, std::string_view version) {
  std::string key(plugin);
  key += '@';
  key += version;
  return key;
}

void TaskQueue::push(const std::string& key, std::int64_t priority, const TaskKey& task, const std::string& tenant) {
  auto& tq = tenants_[tenant];
  if (tq.size == 0) ring_.push_back(tenant);
  tq.by_key[key].push(priority, next_order_++, task);
  ++tq.size;
  ++key_sizes_[key];
  ++size_;
}

std::vector<TaskKey> TaskQueue::Levels::take_if(const Alive& take) {
  std::vector<TaskKey> taken;
  for (auto level = levels_.begin(); level != levels_.end();) {
    auto& fifo = level->second;
    std::deque<std::pair<std::uint64_t, TaskKey>> kept;
    for (const auto& entry : fifo) {
      if (take(entry.second)) {
        taken.push_back(entry.second);
      } else {
        kept.push_back(entry);
      }
    }
    fifo = std::move(kept);
    level = fifo.empty() ? levels_.erase(level) : std::next(level);
  }
  return taken;
}

void TaskQueue::removed(const std::string& tenant, const std::string& key, std::size_t n) {
  if (n == 0) return;
  size_ -= n;
  auto ks = key_sizes_.find(key);
  if (ks != key_sizes_.end() && (ks->second -= n) == 0 && key_sizes_.size() > kMaxIdleEntries) key_sizes_.erase(ks);
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return;
  auto& tq = t->second;
  tq.size -= n;
  auto q = tq.by_key.find(key);
  if (q != tq.by_key.end() && q->second.empty() && tq.by_key.size() > kMaxIdleEntries) tq.by_key.erase(q);
  if (tq.size == 0) {
    drop_from_ring(tenant);  // before the erase: `tenant` may be the ring's own copy
    if (tenants_.size() > kMaxIdleEntries) tenants_.erase(tenants_.find(tenant));
  }
}

void TaskQueue::drop_from_ring(const std::string& tenant) {
  auto pos = std::find(ring_.begin(), ring_.end(), tenant);
  if (pos != ring_.end()) ring_.erase(pos);
}

bool TaskQueue::empty_for(const std::string& key) const {
  auto it = key_sizes_.find(key);
  return it == key_sizes_.end() || it->second == 0;
}

std::vector<TaskKey> TaskQueue::take_if(const std::string& key, const Alive& take) {
  std::vector<TaskKey> taken;
  std::vector<std::pair<std::string, std::size_t>> counts;
  for (auto& [tenant, tq] : tenants_) {
    auto it = tq.by_key.find(key);
    if (it == tq.by_key.end()) continue;
    std::size_t before = taken.size();
    for (const auto& task : it->second.take_if(take)) taken.push_back(task);
    counts.emplace_back(tenant, taken.size() - before);
  }
  for (const auto& [tenant, n] : counts) removed(tenant, key, n);
  return taken;
}

std::vector<std::string> TaskQueue::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, n] : key_sizes_) {
    if (n > 0) out.push_back(key);
  }
  return out;
}

std::optional<TaskKey> TaskQueue::pop_best(const std::vector<std::string>& keys, const Alive& alive,
                                           const std::function<bool(const std::string&)>& eligible) {
  // Walked by index: a tenant found to hold only stale entries leaves the ring during the walk.
  for (std::size_t i = 0; i < ring_.size();) {
    const std::string& tenant = ring_[i];
    if (eligible && !eligible(tenant)) {
      ++i;
      continue;
    }
    auto t = tenants_.find(tenant);
    if (t == tenants_.end()) {
      ++i;
      continue;
    }
    Levels* best = nullptr;
    const std::string* best_key = nullptr;  // points into `keys`, which outlives this call
    for (const auto& key : keys) {
      auto it = t->second.by_key.find(key);
      if (it == t->second.by_key.end()) continue;
      auto& q = it->second;
      std::size_t stale = 0;
      while (!q.empty() && !alive(*q.top().task)) {
        q.pop();
        ++stale;
      }
      if (stale > 0) {
        // Bookkeeping without erasing the map we still iterate over (removed() erases empties).
        size_ -= stale;
        t->second.size -= stale;
        key_sizes_[key] -= stale;
      }
      if (q.empty()) continue;
      if (best == nullptr || best->top() < q.top()) {
        best = &q;
        best_key = &key;
      }
    }
    if (best == nullptr) {
      // Nothing this worker can run (only stale entries were found): tidy up empties.
      std::erase_if(t->second.by_key, [](const auto& kv) { return kv.second.empty(); });
      std::erase_if(key_sizes_, [](const auto& kv) { return kv.second == 0; });
      if (t->second.size == 0) {
        tenants_.erase(t);
        ring_.erase(ring_.begin() + static_cast<std::ptrdiff_t>(i));  // the next tenant moves to i
      } else {
        ++i;
      }
      continue;
    }
    const TaskKey task = *best->top().task;
    best->pop();
    // Served: to the back of the ring if it still has entries (removed() drops it otherwise).
    const std::string served = tenant;  // removed() may erase the ring entry `tenant` refers to
    removed(served, *best_key, 1);
    if (auto pos = std::find(ring_.begin(), ring_.end(), served); pos != ring_.end()) {
      ring_.erase(pos);
      ring_.push_back(served);
    }
    return task;
  }
  return std::nullopt;
}

}  // namespace kbfleet::broker
