#include "broker/tasks/task_store.hpp"

namespace kbfleet::broker {

std::string new_task_id() { return to_hex(new_task_key()); }

const TaskRun& Task::run() const {
  static const TaskRun kNone;
  return run_ ? *run_ : kNone;
}

TaskRun& Task::mutable_run() {
  if (!run_) run_ = std::make_unique<TaskRun>();
  return *run_;
}

bool valid_task_id(std::string_view id) { return parse_task_key(id).has_value(); }

Task& TaskStore::create(protocol::SubmitRequest request, std::int64_t now_ms) {
  const TaskKey key = new_task_key();
  const std::uint32_t slot = slab_.emplace();
  live_.insert(key, slot);
  Task& t = slab_[slot];
  t.key = key;
  t.tenant = names_.get("default");
  t.submitted_ms = now_ms;
  t.queued_at = std::chrono::steady_clock::now();
  if (!request.idempotency_key.empty()) by_idempotency_key_[request.idempotency_key] = key;
  t.request = StoredRequest(std::move(request), names_);
  return t;
}

Task& TaskStore::restore(const std::string& id, protocol::SubmitRequest request) {
  auto key = parse_task_key(id);
  KB_CHECK(key.has_value());  // the caller checked valid_task_id
  Task* existing = find_in(live_, *key);  // a journal holds an id once; if not, the last row wins
  if (existing == nullptr) {
    const std::uint32_t slot = slab_.emplace();
    live_.insert(*key, slot);
    existing = &slab_[slot];
  }
  Task& t = *existing;
  t.key = *key;
  t.tenant = names_.get("default");
  t.queued_at = std::chrono::steady_clock::now();
  if (!request.idempotency_key.empty()) by_idempotency_key_[request.idempotency_key] = *key;
  t.request = StoredRequest(std::move(request), names_);
  return t;
}

void TaskStore::erase(std::string_view id) {
  if (auto key = parse_task_key(id)) erase(*key);
}

void TaskStore::erase(const TaskKey& key) {
  auto is_it = [&](std::uint32_t s) { return slab_[s].key == key; };
  if (auto slot = live_.find(key, is_it)) {
    forget(live_, *slot);
  } else if (auto done = finished_.find(key, is_it)) {
    forget(finished_, *done);
  } else {
    return;
  }
  names_.sweep();
}

void TaskStore::forget(TaskIndex& index, std::uint32_t slot) {
  Task& t = slab_[slot];
  const auto idem = t.request.idempotency_key();
  if (!idem.empty()) {
    auto k = by_idempotency_key_.find(std::string(idem));
    if (k != by_idempotency_key_.end() && k->second == t.key) by_idempotency_key_.erase(k);
  }
  index.erase(t.key, slot);
  slab_.erase(slot);
}

Task* TaskStore::find(std::string_view id) {
  auto key = parse_task_key(id);
  return key ? find(*key) : nullptr;
}

Task* TaskStore::find_in(const TaskIndex& index, const TaskKey& key) {
  auto slot = index.find(key, [&](std::uint32_t s) { return slab_[s].key == key; });
  return slot ? &slab_[*slot] : nullptr;
}

Task* TaskStore::find(const TaskKey& key) {
  if (Task* t = find_in(live_, key)) return t;
  return find_in(finished_, key);
}

Task* TaskStore::find_by_idempotency_key(const std::string& key) {
  auto it = by_idempotency_key_.find(key);
  return it == by_idempotency_key_.end() ? nullptr : find(it->second);
}

zmq::message_t& TaskStore::append_event(Task& t, std::string_view type, std::string_view data_msgpack,
                                           std::int64_t ts_ms) {
  TaskRun& run = t.mutable_run();
  protocol::Writer& w = event_writer_;
  w.reset();
  w.begin_map();
  protocol::EventRef{t.id().view(), run.next_seq++, type, ts_ms, t.request.plugin.view(), t.attempt, data_msgpack}.encode(w);
  w.end_map();
  run.backlog_bytes += w.size();
  const std::string_view bytes = w.bytes();
  run.backlog.push_back(zmq::message_t(bytes.data(), bytes.size()));  // exact size: kept until the task is forgotten
  // Bounded: drop the oldest events beyond the limit, but always keep the latest one. Replays
  // then report first_seq > 1 so a subscriber knows the head was trimmed.
  while (run.backlog_bytes > backlog_limit_ && run.backlog.size() > 1) {
    run.backlog_bytes -= run.backlog.front().size();
    run.backlog.pop_front();
    ++run.first_seq;
  }
  return run.backlog.back_message();
}

void TaskStore::mark_finished(Task& t, std::int64_t now_ms) {
  t.mutable_run().finished_ms = now_ms;
  // Only the index entry moves; the Task stays where it is, so references to it remain valid.
  auto slot = live_.find(t.key, [&](std::uint32_t s) { return &slab_[s] == &t; });
  if (slot) {
    live_.erase(t.key, *slot);
    finished_.insert(t.key, *slot);
  }
  finished_order_.emplace_back(now_ms, t.key);
}

std::size_t TaskStore::expire(std::int64_t now_ms, std::int64_t retention_ms, std::size_t max_finished) {
  std::size_t n = 0;
  while (!finished_order_.empty() &&
         (finished_order_.front().first + retention_ms <= now_ms || finished_order_.size() > max_finished)) {
    const TaskKey key = finished_order_.front().second;
    if (auto slot = finished_.find(key, [&](std::uint32_t s) { return slab_[s].key == key; })) {
      forget(finished_, *slot);
      ++n;
    }
    finished_order_.pop_front();
  }
  if (n > 0) names_.sweep();
  return n;
}

std::int64_t TaskStore::forgotten_through_ms(std::int64_t now_ms) const {
  return finished_order_.empty() ? now_ms : finished_order_.front().first - 1;
}

std::size_t TaskStore::count_in_state(std::string_view state) const {
  std::size_t n = 0;
  for (const TaskIndex* index : {&live_, &finished_}) {
    index->for_each_slot([&](std::uint32_t s) { n += (slab_[s].state == state); });
  }
  return n;
}

}  // namespace kbfleet::broker
