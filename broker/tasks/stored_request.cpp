#include "broker/tasks/stored_request.hpp"

namespace kbfleet::broker {

StoredRequest::StoredRequest(protocol::SubmitRequest r, NameTable& names)
    : plugin(names.get(r.plugin)),
      version(names.get(r.version)),
      handler(names.get(r.handler)),
      input(std::move(r.input)),
      priority(r.priority),
      timeout_ms(r.timeout_ms),
      max_attempts(r.max_attempts) {
  if (!r.env.empty() || !r.idempotency_key.empty()) {
    rare_ = std::make_unique<Rare>(Rare{std::move(r.env), std::move(r.idempotency_key)});
  }
}

const std::map<std::string, std::string>& StoredRequest::env() const {
  static const std::map<std::string, std::string> kNone;
  return rare_ ? rare_->env : kNone;
}

std::string_view StoredRequest::idempotency_key() const { return rare_ ? rare_->idempotency_key : std::string_view(); }

protocol::SubmitRequestRef StoredRequest::ref() const {
  return {plugin.view(), version.view(), handler.view(), input, env(), priority, timeout_ms, idempotency_key(), max_attempts};
}

protocol::SubmitRequest StoredRequest::copy() const {
  protocol::SubmitRequest r;
  r.plugin = plugin.str();
  r.version = version.str();
  r.handler = handler.str();
  r.input = input;
  r.env = env();
  r.priority = priority;
  r.timeout_ms = timeout_ms;
  r.idempotency_key = std::string(idempotency_key());
  r.max_attempts = max_attempts;
  return r;
}

}  // namespace kbfleet::broker
