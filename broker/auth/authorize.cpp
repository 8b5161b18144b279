#include "broker/auth/authorize.hpp"

#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

namespace msg = protocol::msg;

MessageClass message_class(std::string_view type) {
  for (auto t : {msg::kSubmit, msg::kStatus, msg::kCancel, msg::kEvents, msg::kWorkers, msg::kArtifacts, msg::kFetch,
                 msg::kRetry}) {
    if (type == t) return MessageClass::kClient;
  }
  if (type == msg::kInfo) return MessageClass::kAny;
  // ready, heartbeat, task_events, result, upload_*, drain, bye, and unknown types (refused later).
  return MessageClass::kWorker;
}

std::string tenant_topic(std::string_view tenant) { return "tenant." + std::string(tenant) + "."; }

Status authorize_message(const Identity& who, std::string_view type) {
  const MessageClass c = message_class(type);
  if (c == MessageClass::kAny && who.role != Role::kSubscriber) return {};
  const bool ok = c == MessageClass::kClient ? (who.role == Role::kClient || who.role == Role::kAdmin)
                                             : c == MessageClass::kWorker && who.role == Role::kWorker;
  if (ok) return {};
  return make_error(ErrorCode::kForbidden,
                    "identity " + who.to_string() + " may not send '" + std::string(type) + "' (" +
                        (c == MessageClass::kWorker ? "worker messages need a worker key" : "needs a client or admin key") +
                        ")",
                    {{"identity", who.to_string()}, {"reason", "role"}});
}

Status authorize_task(const Identity& who, const std::string& task_tenant, const std::string& task_id) {
  if (who.role == Role::kAdmin || who.tenant == task_tenant) return {};
  return make_error(ErrorCode::kForbidden,
                    "task " + task_id + " belongs to another tenant; identity " + who.to_string() + " may not see it",
                    {{"identity", who.to_string()}, {"task_id", task_id}, {"reason", "tenant"}});
}

Status authorize_plugin(const Identity& who, const TenantPolicy& policy, const std::string& plugin) {
  if (policy.allows_plugin(plugin)) return {};
  return make_error(ErrorCode::kForbidden,
                    "tenant " + who.tenant + " may not submit plugin '" + plugin + "' (not in its plugins= policy)",
                    {{"identity", who.to_string()}, {"plugin", plugin}, {"reason", "plugin"}});
}

bool subscription_allowed(const Identity& who, std::string_view topic,
                          const std::function<std::optional<std::string>(std::string_view)>& tenant_of_task) {
  if (who.role == Role::kAdmin) return true;
  if (who.role == Role::kWorker) return false;
  // Exact topics only: XPUB matches subscriptions as prefixes, so "task." or "" would match all.
  if (topic == tenant_topic(who.tenant)) return true;
  constexpr std::string_view kTask = "task.";
  if (topic.substr(0, kTask.size()) != kTask) return false;
  auto id = topic.substr(kTask.size());
  if (id.size() != 32) return false;  // a full task id, so it is no prefix of another task's topic
  auto owner = tenant_of_task(id);
  return owner && *owner == who.tenant;
}

}  // namespace kbfleet::broker
