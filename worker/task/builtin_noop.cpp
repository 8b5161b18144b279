#include "worker/task/builtin_noop.hpp"

#include <string>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

protocol::PluginOffer noop_offer() {
  protocol::PluginOffer o;
  o.id = std::string(kNoopPlugin);
  o.version = std::string(kNoopVersion);
  o.handlers.emplace_back(kNoopHandler);
  o.idempotent.emplace_back(kNoopHandler);
  return o;
}

protocol::TaskOutcome run_noop(const protocol::TaskAssignment& task) {
  protocol::TaskOutcome o;
  if (task.handler != kNoopHandler) {
    o.state = std::string(protocol::state::kFailed);
    o.error_code = std::string(code_name(ErrorCode::kHandlerNotFound));
    o.error_message = "the built-in plugin " + std::string(kNoopPlugin) + " has only the handler '" +
                      std::string(kNoopHandler) + "', not '" + task.handler + "'";
    return o;
  }
  o.state = std::string(protocol::state::kSucceeded);
  o.exit_code = 0;
  o.result = task.input;  // msgpack bytes in, msgpack bytes out; empty = no result
  return o;
}

}  // namespace kbfleet::worker
