#pragma once
// The connected workers: their slots (credit), the plugins they offer, the tasks they run, and
// when they were last heard from. Pure bookkeeping with an injected clock; no sockets.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "broker/tasks/task_key.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

using Clock = std::chrono::steady_clock;
// Tasks by their 16-byte key: assigning one allocates a node, never a 32-character string.
using TaskKeySet = std::unordered_set<TaskKey, TaskKeyHash>;

struct WorkerInfo {
  std::string routing_id;  // ZeroMQ identity on the ROUTER
  protocol::WorkerReady ready;
  std::int64_t free = 0;  // slots without a task
  TaskKeySet running;
  std::set<std::string> foreign;  // tasks it still runs that this broker does not know (restart)
  bool draining = false;          // shutting down: no new tasks
  std::vector<std::string> keys;  // queue keys this worker can serve
  std::uint64_t last_assigned = 0;  // dispatch counter at its last task (ties go to the idlest)
  Clock::time_point last_seen;
};

// What the fleet offers for one plugin id, to answer submissions precisely.
struct PluginLookup {
  bool any_worker = false;      // at least one worker is connected
  bool offered = false;         // a connected worker offers a valid manifest for the id/version
  std::set<std::string> versions;  // valid versions offered for the id
  // Handlers offered for the id/version; when it is offered only without its capabilities
  // granted (!offered), those of the ungranted offers.
  std::set<std::string> handlers;
  std::set<std::string> idempotent;  // of those, the ones the manifest marks idempotent
  std::optional<protocol::PluginOffer> broken;  // an invalid manifest advertised for the id
  std::set<std::string> ungranted;  // capabilities the id/version needs that its workers do not grant
};

class WorkerRegistry {
 public:
  // Adds or replaces a worker; returns the tasks it was running before (replaced entry).
  TaskKeySet upsert(const std::string& routing_id, protocol::WorkerReady ready, Clock::time_point now);
  // Removes a worker; returns the tasks it was running.
  TaskKeySet remove(const std::string& routing_id);
  WorkerInfo* find(const std::string& routing_id);
  void touch(const std::string& routing_id, Clock::time_point now);
  // Workers silent since before `deadline`.
  std::vector<std::string> silent_since(Clock::time_point deadline) const;

  // Workers with credit that can serve `key`, into `out` (cleared first; the caller keeps its
  // capacity, so a dispatch allocates nothing): most free slots first, then the one that got a
  // task least recently, so equal workers share the load instead of the first one taking everything.
  void with_credit_for(const std::string& key, std::vector<WorkerInfo*>& out);

  void assign(WorkerInfo& w, const TaskKey& task);
  void release(WorkerInfo& w, const TaskKey& task);

  // True if a connected worker that is not draining serves `key` (offers it and grants its
  // capabilities); it may be busy.
  bool serves(const std::string& key) const;

  // What the fleet offers for plugin@version. Cached until the next upsert/remove: every
  // submission asks, and the answer changes only when workers come or go.
  const PluginLookup& lookup(std::string_view plugin, std::string_view version, std::string_view handler) const;

  const std::map<std::string, WorkerInfo>& all() const { return workers_; }
  std::int64_t total_slots() const;
  std::int64_t free_slots() const;

 private:
  PluginLookup compute_lookup(std::string_view plugin, std::string_view version) const;

  std::map<std::string, WorkerInfo> workers_;
  std::uint64_t assignments_ = 0;
  mutable std::map<std::string, PluginLookup, std::less<>> lookups_;  // by queue_key(plugin, version)
};

}  // namespace kbfleet::broker
