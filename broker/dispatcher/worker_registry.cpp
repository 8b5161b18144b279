#include "broker/dispatcher/worker_registry.hpp"

#include <algorithm>

#include "broker/queue/task_queue.hpp"

namespace kbfleet::broker {
namespace {

constexpr std::size_t kMaxCachedLookups = 4096;

bool grants_all(const protocol::WorkerReady& w, const protocol::PluginOffer& p) {
  for (const auto& cap : p.capabilities) {
    if (std::find(w.capabilities.begin(), w.capabilities.end(), cap) == w.capabilities.end()) return false;
  }
  return true;
}

}  // namespace

TaskKeySet WorkerRegistry::upsert(const std::string& routing_id, protocol::WorkerReady ready, Clock::time_point now) {
  TaskKeySet previous;
  if (auto it = workers_.find(routing_id); it != workers_.end()) previous = std::move(it->second.running);
  WorkerInfo w;
  w.routing_id = routing_id;
  w.free = ready.slots;
  w.running.reserve(static_cast<std::size_t>(ready.slots));
  w.last_seen = now;
  std::set<std::string> keys;
  for (const auto& p : ready.plugins) {
    if (!p.error_code.empty() || !grants_all(ready, p)) continue;
    keys.insert(queue_key(p.id, ""));
    keys.insert(queue_key(p.id, p.version));
  }
  w.keys.assign(keys.begin(), keys.end());
  w.ready = std::move(ready);
  workers_[routing_id] = std::move(w);
  lookups_.clear();
  return previous;
}

TaskKeySet WorkerRegistry::remove(const std::string& routing_id) {
  auto it = workers_.find(routing_id);
  if (it == workers_.end()) return {};
  auto running = std::move(it->second.running);
  workers_.erase(it);
  lookups_.clear();
  return running;
}

WorkerInfo* WorkerRegistry::find(const std::string& routing_id) {
  auto it = workers_.find(routing_id);
  return it == workers_.end() ? nullptr : &it->second;
}

void WorkerRegistry::touch(const std::string& routing_id, Clock::time_point now) {
  if (auto* w = find(routing_id)) w->last_seen = now;
}

std::vector<std::string> WorkerRegistry::silent_since(Clock::time_point deadline) const {
  std::vector<std::string> out;
  for (const auto& [id, w] : workers_) {
    if (w.last_seen < deadline) out.push_back(id);
  }
  return out;
}

void WorkerRegistry::with_credit_for(const std::string& key, std::vector<WorkerInfo*>& out) {
  out.clear();
  for (auto& [id, w] : workers_) {
    if (w.free > 0 && !w.draining && std::binary_search(w.keys.begin(), w.keys.end(), key)) out.push_back(&w);
  }
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) {
    return a->free != b->free ? a->free > b->free : a->last_assigned < b->last_assigned;
  });
}

void WorkerRegistry::assign(WorkerInfo& w, const TaskKey& task) {
  if (w.running.insert(task).second) --w.free;
  w.last_assigned = ++assignments_;
}

void WorkerRegistry::release(WorkerInfo& w, const TaskKey& task) {
  if (w.running.erase(task) > 0) ++w.free;
}

bool WorkerRegistry::serves(const std::string& key) const {
  for (const auto& [id, w] : workers_) {
    if (!w.draining && std::binary_search(w.keys.begin(), w.keys.end(), key)) return true;
  }
  return false;
}

const PluginLookup& WorkerRegistry::lookup(std::string_view plugin, std::string_view version,
                                           std::string_view /*handler*/) const {
  std::string key = queue_key(plugin, version);
  auto it = lookups_.find(key);
  if (it == lookups_.end()) {
    // Bounded by what clients ask for between two fleet changes; a flood of made-up plugin ids
    // is kept from growing it without bound.
    if (lookups_.size() >= kMaxCachedLookups) lookups_.clear();
    it = lookups_.emplace(std::move(key), compute_lookup(plugin, version)).first;
  }
  return it->second;
}

PluginLookup WorkerRegistry::compute_lookup(std::string_view plugin, std::string_view version) const {
  PluginLookup out;
  out.any_worker = !workers_.empty();
  std::set<std::string> ungranted_handlers;
  std::set<std::string> ungranted_idempotent;
  for (const auto& [id, w] : workers_) {
    for (const auto& p : w.ready.plugins) {
      if (p.id != plugin) continue;
      if (!p.error_code.empty()) {
        if (!out.broken) out.broken = p;
        continue;
      }
      out.versions.insert(p.version);
      if (!version.empty() && p.version != version) continue;
      if (!grants_all(w.ready, p)) {
        for (const auto& cap : p.capabilities) {
          if (std::find(w.ready.capabilities.begin(), w.ready.capabilities.end(), cap) == w.ready.capabilities.end()) {
            out.ungranted.insert(cap);
          }
        }
        ungranted_handlers.insert(p.handlers.begin(), p.handlers.end());
        ungranted_idempotent.insert(p.idempotent.begin(), p.idempotent.end());
        continue;
      }
      out.offered = true;
      out.handlers.insert(p.handlers.begin(), p.handlers.end());
      out.idempotent.insert(p.idempotent.begin(), p.idempotent.end());
    }
  }
  if (!out.offered) {
    out.handlers = std::move(ungranted_handlers);
    out.idempotent = std::move(ungranted_idempotent);
  }
  return out;
}

std::int64_t WorkerRegistry::total_slots() const {
  std::int64_t n = 0;
  for (const auto& [id, w] : workers_) n += w.ready.slots;
  return n;
}

std::int64_t WorkerRegistry::free_slots() const {
  std::int64_t n = 0;
  for (const auto& [id, w] : workers_) n += w.free;
  return n;
}

}  // namespace kbfleet::broker
