// The broker's side of issue #7 (docs/security.md): CURVE on the ROUTER and the XPUB with a ZAP
// handler over the allow-list, the identity of every message, event subscriptions applied only
// when their topic belongs to the subscriber's tenant (XPUB_MANUAL), and per-tenant limits.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/auth/authorize.hpp"
#include "broker/broker.hpp"
#include "common/security/cert.hpp"
#include "common/transport/curve.hpp"

namespace kbfleet::broker {

namespace msg = protocol::msg;

Status Broker::setup_security() {
  if (options_.auth_file.empty() != options_.curve_secret.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--auth and --curve-secret go together: CURVE needs the broker's key and the allow-list");
  }
  if (options_.auth_file.empty()) {
    for (const auto* ep : {&options_.bind, &options_.events}) {
      if (!transport::is_loopback_endpoint(*ep)) {
        spdlog::warn("plain mode on a non-loopback endpoint endpoint={}: anyone who can reach it may submit, read and "
                     "work without a key; use --auth and --curve-secret (docs/security.md)", *ep);
      }
    }
    return {};
  }
  auto keys = security::load_secret_certificate(options_.curve_secret);
  if (!keys) return tl::unexpected(keys.error());
  curve_secret_key_ = keys->secret_key;
  auto list = AllowList::load(options_.auth_file);
  if (!list) return tl::unexpected(list.error());
  allow_ = std::make_unique<AllowList>(std::move(*list));
  allow_view_ = allow_.get();
  // The handler must be bound before the CURVE sockets, or libzmq would accept every key.
  auto zap = ZapHandler::bind(ctx_, &allow_view_,
                              [this](std::string_view reason, const std::string& key, const std::string& address,
                                     const std::string& domain) {
                                metrics_.auth_denied.increment(std::string(reason));
                                spdlog::warn("connection refused reason={} key={} address={} domain={}", reason,
                                             key.empty() ? "-" : key, address, domain);
                              });
  if (!zap) return tl::unexpected(zap.error());
  zap_ = std::move(*zap);
  if (auto st = transport::set_curve_server(router_, curve_secret_key_, kRouterDomain); !st) return st;
  if (auto st = transport::set_curve_server(xpub_, curve_secret_key_, kEventsDomain); !st) return st;
  try {
    // Subscriptions reach the broker, which applies only those it approves (ZMQ_SUBSCRIBE on
    // the XPUB applies to the pipe the last subscription came from).
    xpub_.set(zmq::sockopt::xpub_manual, 1);
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kInternal, std::string("xpub_manual: ") + e.what());
  }
  spdlog::info("CURVE on bind and events; allow-list {} keys={} (public key {})", options_.auth_file, allow_->size(),
               keys->public_key);
  return {};
}

Status Broker::reload_allow_list() {
  if (!secure()) return {};
  auto list = AllowList::load(options_.auth_file);
  if (!list) {
    spdlog::error("allow-list reload failed, keeping the previous one error=\"{}\"", list.error().message);
    return tl::unexpected(list.error());
  }
  allow_ = std::make_unique<AllowList>(std::move(*list));
  allow_view_ = allow_.get();
  metrics_.auth_reloads.Increment();
  spdlog::info("allow-list reloaded path={} keys={}", options_.auth_file, allow_->size());
  return {};
}

void Broker::deny(const std::string& peer, std::int64_t req, const Error& e, std::string_view reason) {
  metrics_.auth_denied.increment(std::string(reason));
  spdlog::warn("request denied identity={} key={} code={} reason={} error=\"{}\"",
               caller_ ? caller_->to_string() : "-", caller_ && !caller_->key.empty() ? caller_->key : "-",
               code_name(e.code), reason, e.message);
  reply_error(peer, req, e);
}

bool Broker::authenticate(transport::Incoming& in) {
  if (!secure()) {
    caller_ = &plain_identity_;
    return true;
  }
  caller_ = allow_->find(in.user_id);
  if (caller_ == nullptr) {
    // Connected with a key that a reload has since removed (or without CURVE metadata).
    deny(in.peer, in.req,
         Error{ErrorCode::kUnauthenticated,
               "this connection's key is not (or no longer) in the broker's allow-list; ask the operator to add it",
               {}},
         "unknown_key");
    return false;
  }
  if (auto ok = authorize_message(*caller_, in.type); !ok) {
    // A heartbeat or result has no reply of its own, but the refusal is still sent: the peer
    // learns its key is the wrong kind instead of waiting.
    deny(in.peer, in.req, ok.error(), "role");
    return false;
  }
  if (message_class(in.type) == MessageClass::kWorker) {
    // A routing id belongs to the worker key that used it first, until that worker is lost:
    // another worker key cannot report on (or re-announce) the tasks dispatched to it.
    auto [it, added] = worker_keys_.try_emplace(in.peer, caller_->key);
    if (!added && it->second != caller_->key) {
      deny(in.peer, in.req,
           Error{ErrorCode::kForbidden, "routing id '" + in.peer + "' belongs to another worker key", {}},
           "worker_key");
      return false;
    }
  }
  return true;
}

void Broker::on_secure_subscription(const zmq::message_t& m) {
  if (m.size() < 1) return;
  const auto* p = static_cast<const char*>(m.data());
  const bool subscribe = p[0] == 1;
  std::string topic(p + 1, m.size() - 1);
  const Identity* who = allow_->find(transport::user_id_of(m));
  auto owner = [this](std::string_view id) -> std::optional<std::string> {
    const Task* t = tasks_.find(id);
    if (t == nullptr) return std::nullopt;
    return t->tenant.str();
  };
  if (who == nullptr || !subscription_allowed(*who, topic, owner)) {
    if (subscribe) {
      metrics_.auth_denied.increment("subscription");
      spdlog::warn("subscription denied identity={} topic=\"{}\"", who ? who->to_string() : "-", topic);
    }
    return;  // never applied: the subscriber receives nothing for it
  }
  try {
    if (subscribe) {
      xpub_.set(zmq::sockopt::subscribe, topic);
    } else {
      xpub_.set(zmq::sockopt::unsubscribe, topic);
    }
  } catch (const zmq::error_t& e) {
    spdlog::warn("subscription not applied topic=\"{}\" error=\"{}\"", topic, e.what());
    return;
  }
  if (topic.rfind("plugin.", 0) == 0) {
    plugin_subscribers_ = std::max<std::int64_t>(plugin_subscribers_ + (subscribe ? 1 : -1), 0);
  }
}

Status Broker::admit_for_tenant(const std::string& plugin) {
  if (!secure()) return {};
  const TenantPolicy& policy = allow_->policy(caller_->tenant);
  if (auto ok = authorize_plugin(*caller_, policy, plugin); !ok) return ok;
  TenantUsage& u = usage_[caller_->tenant];
  if (policy.max_queued > 0 && u.queued >= policy.max_queued) {
    return make_error(ErrorCode::kQueueFull,
                      "tenant " + caller_->tenant + " already has " + std::to_string(u.queued) +
                          " queued tasks (its max_queued); retry later",
                      {{"retry_after_ms", "1000"}, {"reason", "tenant_queued"}});
  }
  if (policy.rate > 0) {
    const auto now = Clock::now();
    const double burst = std::max(policy.burst, 1.0);
    if (u.tokens < 0) {
      u.tokens = burst;
    } else {
      u.tokens = std::min(burst, u.tokens + policy.rate * std::chrono::duration<double>(now - u.refilled).count());
    }
    u.refilled = now;
    if (u.tokens < 1) {
      auto wait_ms = static_cast<std::int64_t>((1 - u.tokens) / policy.rate * 1000) + 1;
      return make_error(ErrorCode::kRateLimited,
                        "tenant " + caller_->tenant + " submits faster than its rate of " +
                            std::to_string(static_cast<std::int64_t>(policy.rate)) + "/s; retry in " +
                            std::to_string(wait_ms) + " ms",
                        {{"retry_after_ms", std::to_string(wait_ms)}, {"reason", "rate"}});
    }
    u.tokens -= 1;
  }
  return {};
}

bool Broker::tenant_may_start(const std::string& tenant) const {
  if (!secure()) return true;
  const TenantPolicy& policy = allow_->policy(tenant);
  if (policy.max_running <= 0) return true;
  auto it = usage_.find(tenant);
  return it == usage_.end() || it->second.running < policy.max_running;
}

void Broker::count_queued(const Task& t, int delta) {
  queued_ += delta;
  usage_[t.tenant.str()].queued += delta;
}

void Broker::count_running(const Task& t, int delta) {
  running_ += delta;
  usage_[t.tenant.str()].running += delta;
}

}  // namespace kbfleet::broker
