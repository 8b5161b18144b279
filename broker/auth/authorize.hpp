#pragma once
// Authorization decisions of a secured broker, pure functions of an Identity (from the allow-list
// entry of the CURVE key a message came with) and what it asks for. Guarantees, each tested in
// tests/broker/auth/authorize_test.cpp:
// - a client or admin may use the client messages; a worker only the worker messages; a
//   subscriber none (it may only subscribe to events);
// - a task, its status, events and artifacts are visible only to its tenant and to admins;
// - a tenant submits only the plugins its policy lists;
// - an event subscription is applied only for a topic of the subscriber's own tenant: its
//   tenant topic, or the topic of one of its tenant's tasks; admins may subscribe to anything.
// Denials are FORBIDDEN with a message saying who asked for what.
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "broker/auth/allow_list.hpp"
#include "common/errors/error.hpp"

namespace kbfleet::broker {

enum class MessageClass { kClient, kWorker, kAny };
MessageClass message_class(std::string_view type);

// "tenant.<name>." : every event of the tenant's tasks (published only in CURVE mode).
std::string tenant_topic(std::string_view tenant);

[[nodiscard]] Status authorize_message(const Identity& who, std::string_view type);
[[nodiscard]] Status authorize_task(const Identity& who, const std::string& task_tenant, const std::string& task_id);
[[nodiscard]] Status authorize_plugin(const Identity& who, const TenantPolicy& policy, const std::string& plugin);
// `tenant_of_task(id)` returns the owner of a task id, nullopt if unknown.
bool subscription_allowed(const Identity& who, std::string_view topic,
                          const std::function<std::optional<std::string>(std::string_view)>& tenant_of_task);

}  // namespace kbfleet::broker
