#include "broker/queue/task_queue.hpp"

namespace kbfleet::broker {

std::string queue_key(std::string_view plugin, std::string_view version) {
  std::string key(plugin);
  key += '@';
  key += version;
  return key;
}

void TaskQueue::push(const std::string& key, std::int64_t priority, const std::string& task_id) {
  queues_[key].push(Entry{priority, next_order_++, task_id});
  ++size_;
}

bool TaskQueue::empty_for(const std::string& key) const {
  auto it = queues_.find(key);
  return it == queues_.end() || it->second.empty();
}

std::vector<std::string> TaskQueue::take_if(const std::string& key,
                                            const std::function<bool(const std::string&)>& take) {
  std::vector<std::string> taken;
  auto it = queues_.find(key);
  if (it == queues_.end()) return taken;
  std::vector<Entry> kept;
  for (auto& q = it->second; !q.empty(); q.pop()) {
    if (take(q.top().task_id)) {
      taken.push_back(q.top().task_id);
    } else {
      kept.push_back(q.top());
    }
  }
  size_ -= taken.size();
  if (kept.empty()) {
    queues_.erase(it);
  } else {
    it->second = std::priority_queue<Entry>(std::less<Entry>(), std::move(kept));
  }
  return taken;
}

std::vector<std::string> TaskQueue::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, q] : queues_) {
    if (!q.empty()) out.push_back(key);
  }
  return out;
}

std::optional<std::string> TaskQueue::pop_best(const std::vector<std::string>& keys,
                                               const std::function<bool(const std::string&)>& alive) {
  std::priority_queue<Entry>* best = nullptr;
  for (const auto& key : keys) {
    auto it = queues_.find(key);
    if (it == queues_.end()) continue;
    auto& q = it->second;
    while (!q.empty() && !alive(q.top().task_id)) {
      q.pop();
      --size_;
    }
    if (q.empty()) continue;
    if (best == nullptr || best->top() < q.top()) best = &q;
  }
  if (best == nullptr) return std::nullopt;
  std::string id = best->top().task_id;
  best->pop();
  --size_;
  return id;
}

}  // namespace kbfleet::broker
