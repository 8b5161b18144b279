#include "broker/tasks/task_store.hpp"

#include <sys/random.h>

#include <cerrno>

namespace kbfleet::broker {

std::string new_task_id() {
  // Bytes are used once and never reused. (A process that forked would share the pool with its
  // child; the broker never forks.)
  thread_local unsigned char pool[4096];
  thread_local std::size_t used = sizeof pool;
  if (used + 16 > sizeof pool) {
    std::size_t got = 0;
    while (got < sizeof pool) {
      ssize_t n = ::getrandom(pool + got, sizeof pool - got, 0);
      if (n < 0 && errno == EINTR) continue;
      KB_CHECK(n > 0);  // getrandom cannot fail once the pool is initialised
      got += static_cast<std::size_t>(n);
    }
    used = 0;
  }
  const unsigned char* bytes = pool + used;
  used += 16;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  id.reserve(32);
  for (std::size_t i = 0; i < 16; ++i) {
    const unsigned char b = bytes[i];
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 0xf]);
  }
  return id;
}

bool valid_task_id(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Task& TaskStore::create(protocol::SubmitRequest request, std::int64_t now_ms) {
  std::string id = new_task_id();
  Task& t = tasks_[id];
  t.id = id;
  t.submitted_ms = now_ms;
  t.queued_at = std::chrono::steady_clock::now();
  if (!request.idempotency_key.empty()) by_idempotency_key_[request.idempotency_key] = id;
  t.request = std::move(request);
  return t;
}

Task& TaskStore::restore(const std::string& id, protocol::SubmitRequest request) {
  Task& t = tasks_[id];
  t.id = id;
  t.queued_at = std::chrono::steady_clock::now();
  if (!request.idempotency_key.empty()) by_idempotency_key_[request.idempotency_key] = id;
  t.request = std::move(request);
  return t;
}

void TaskStore::erase(const std::string& id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  const auto& key = it->second.request.idempotency_key;
  if (!key.empty()) {
    auto k = by_idempotency_key_.find(key);
    if (k != by_idempotency_key_.end() && k->second == id) by_idempotency_key_.erase(k);
  }
  tasks_.erase(it);
}

Task* TaskStore::find(std::string_view id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

Task* TaskStore::find_by_idempotency_key(const std::string& key) {
  auto it = by_idempotency_key_.find(key);
  return it == by_idempotency_key_.end() ? nullptr : find(it->second);
}

std::string TaskStore::append_event(Task& t, std::string_view type, std::string data_msgpack, std::int64_t ts_ms) {
  protocol::Event e;
  e.task_id = t.id;
  e.seq = t.next_seq++;
  e.type = std::string(type);
  e.ts_ms = ts_ms;
  e.plugin = t.request.plugin;
  e.attempt = t.attempt;
  e.data = std::move(data_msgpack);
  protocol::Writer w;
  w.begin_map();
  e.encode(w);
  w.end_map();
  std::string body = w.take();
  t.backlog.push_back(body);
  t.backlog_bytes += body.size();
  // Bounded: drop the oldest events beyond the limit, but always keep the latest one. Replays
  // then report first_seq > 1 so a subscriber knows the head was trimmed.
  while (t.backlog_bytes > backlog_limit_ && t.backlog.size() > 1) {
    t.backlog_bytes -= t.backlog.front().size();
    t.backlog.pop_front();
    ++t.first_seq;
  }
  return body;
}

void TaskStore::mark_finished(Task& t, std::int64_t now_ms) {
  t.finished_ms = now_ms;
  finished_order_.emplace_back(now_ms, t.id);
}

std::size_t TaskStore::expire(std::int64_t now_ms, std::int64_t retention_ms) {
  std::size_t n = 0;
  while (!finished_order_.empty() && finished_order_.front().first + retention_ms <= now_ms) {
    auto it = tasks_.find(finished_order_.front().second);
    if (it != tasks_.end()) {
      if (!it->second.request.idempotency_key.empty()) by_idempotency_key_.erase(it->second.request.idempotency_key);
      tasks_.erase(it);
      ++n;
    }
    finished_order_.pop_front();
  }
  return n;
}

std::size_t TaskStore::count_in_state(std::string_view state) const {
  std::size_t n = 0;
  for (const auto& [id, t] : tasks_) n += (t.state == state);
  return n;
}

}  // namespace kbfleet::broker
