#pragma once
// A task's request as the broker keeps it while the task lives. Queued tasks are most of the
// broker's memory (docs/performance.md, memory per queued task), so the fields nearly every
// request leaves empty (env, idempotency key) live in a block allocated only when one is set, and
// the names that many tasks share are held once (SharedName).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "broker/tasks/shared_name.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

class StoredRequest {
 public:
  StoredRequest() = default;
  StoredRequest(protocol::SubmitRequest r, NameTable& names);

  SharedName plugin;
  SharedName version;  // empty = any
  SharedName handler;
  std::string input;  // msgpack bytes of the input value; empty = nil
  std::int64_t priority = 0;
  std::int64_t timeout_ms = 0;
  std::int64_t max_attempts = 0;  // as submitted (0 = the policy)

  const std::map<std::string, std::string>& env() const;
  std::string_view idempotency_key() const;

  protocol::SubmitRequestRef ref() const;  // the wire form (encode) without copying
  protocol::SubmitRequest copy() const;    // a new request with the same fields (`kbfleet retry`)

 private:
  struct Rare {
    std::map<std::string, std::string> env;
    std::string idempotency_key;
  };
  std::unique_ptr<Rare> rare_;
};

}  // namespace kbfleet::broker
