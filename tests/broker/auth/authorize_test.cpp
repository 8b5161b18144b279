// Authorization decisions (broker/auth/authorize.hpp), one guarantee per case.
#include <catch2/catch.hpp>

#include "broker/auth/authorize.hpp"

using namespace kbfleet;
using namespace kbfleet::broker;

namespace {
const Identity kAlice{"acme", Role::kClient, "a"};
const Identity kBob{"beta", Role::kClient, "b"};
const Identity kWorker{"fleet", Role::kWorker, "w"};
const Identity kSub{"acme", Role::kSubscriber, "s"};
const Identity kAdmin{"ops", Role::kAdmin, "o"};
const std::string kAcmeTask(32, 'a');
const std::string kBetaTask(32, 'b');

std::optional<std::string> owner(std::string_view id) {
  if (id == kAcmeTask) return std::string("acme");
  if (id == kBetaTask) return std::string("beta");
  return std::nullopt;
}
}  // namespace

TEST_CASE("worker keys may send only worker messages, clients only client messages", "[broker][auth]") {
  for (const char* t : {"submit", "status", "cancel", "events", "artifacts", "fetch", "retry", "workers"}) {
    CHECK(authorize_message(kAlice, t));
    CHECK(authorize_message(kAdmin, t));
    auto denied = authorize_message(kWorker, t);
    REQUIRE_FALSE(denied);
    CHECK(denied.error().code == ErrorCode::kForbidden);
    CHECK_THAT(denied.error().message, Catch::Contains("fleet/worker"));
    CHECK_FALSE(authorize_message(kSub, t));
  }
  for (const char* t : {"ready", "heartbeat", "task_events", "result", "upload_begin", "upload_chunk", "upload_end",
                        "drain", "bye"}) {
    CHECK(authorize_message(kWorker, t));
    CHECK_FALSE(authorize_message(kAlice, t));
    CHECK_FALSE(authorize_message(kAdmin, t));  // an admin does not run tasks either
  }
  CHECK(authorize_message(kWorker, "info"));
  CHECK_FALSE(authorize_message(kSub, "info"));
}

TEST_CASE("a task is visible to its tenant and to admins only", "[broker][auth]") {
  CHECK(authorize_task(kAlice, "acme", kAcmeTask));
  CHECK(authorize_task(kAdmin, "acme", kAcmeTask));
  auto denied = authorize_task(kBob, "acme", kAcmeTask);
  REQUIRE_FALSE(denied);
  CHECK(denied.error().code == ErrorCode::kForbidden);
}

TEST_CASE("a tenant submits only the plugins its policy lists", "[broker][auth]") {
  TenantPolicy p;
  CHECK(authorize_plugin(kAlice, p, "anything"));
  p.plugins = std::set<std::string>{"hello"};
  CHECK(authorize_plugin(kAlice, p, "hello"));
  auto denied = authorize_plugin(kAlice, p, "build");
  REQUIRE_FALSE(denied);
  CHECK(denied.error().code == ErrorCode::kForbidden);
  CHECK_THAT(denied.error().message, Catch::Contains("plugin 'build'"));
}

TEST_CASE("event subscriptions are approved only for exact topics of the subscriber's tenant", "[broker][auth]") {
  CHECK(subscription_allowed(kSub, "tenant.acme.", owner));
  CHECK(subscription_allowed(kAlice, "task." + kAcmeTask, owner));
  CHECK(subscription_allowed(kSub, "task." + kAcmeTask, owner));
  // Prefixes that would match other tenants' events.
  for (std::string topic : {"", "t", "task.", "tenant.", "tenant.acme", "tenant.", "plugin.hello", "plugin."}) {
    CHECK_FALSE(subscription_allowed(kSub, topic, owner));
  }
  CHECK_FALSE(subscription_allowed(kSub, "task." + kBetaTask, owner));
  CHECK_FALSE(subscription_allowed(kSub, "task." + kAcmeTask.substr(0, 31), owner));  // a prefix of a task id
  CHECK_FALSE(subscription_allowed(kSub, "tenant.beta.", owner));
  CHECK_FALSE(subscription_allowed(kSub, "task." + std::string(32, 'c'), owner));  // unknown task
  CHECK_FALSE(subscription_allowed(kWorker, "tenant.fleet.", owner));
  CHECK(subscription_allowed(kAdmin, "", owner));
}
