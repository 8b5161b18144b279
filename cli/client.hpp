#pragma once
// A kbfleet client connection: request/reply over a DEALER to the broker (matched by "req"),
// and a SUB socket for a task's live events. Knows only the broker endpoint: the event
// endpoint is learned with an `info` request.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "common/errors/error.hpp"
#include "common/protocol/wire.hpp"
#include "common/transport/curve.hpp"

namespace kbfleet::cli {

struct Reply {
  std::string type;
  protocol::Body body;
  std::vector<zmq::message_t> data;
};

class Client {
 public:
  // With `keys` enabled, every socket (the DEALER and the SUB of follow) is a CURVE client, and a
  // handshake the broker refuses is UNAUTHENTICATED instead of a timeout.
  Client(std::string endpoint, std::chrono::milliseconds timeout, transport::ClientKeys keys = {});
  // Sends `type` with a body written by fn(Writer&) into an open map (the client adds "req")
  // and waits for the matching reply. An `error` reply becomes its Error; no answer within the
  // timeout is BROKER_UNREACHABLE with a message saying how to point at the right broker.
  template <typename Fn>
  [[nodiscard]] Result<Reply> call(std::string_view type, Fn&& fn) {
    const std::int64_t req = next_req_++;
    return exchange(type, req, request_body(req, fn));
  }
  // Pipelining: start() sends a request like call() and returns its req at once; finish(req)
  // waits for that reply. Finish requests in the order they were started (the broker answers
  // one connection in order; a reply to a request not yet finished is then never skipped).
  // Errors as call().
  template <typename Fn>
  [[nodiscard]] Result<std::int64_t> start(std::string_view type, Fn&& fn) {
    const std::int64_t req = next_req_++;
    if (auto st = send_request(type, request_body(req, fn)); !st) return tl::unexpected(st.error());
    return req;
  }
  [[nodiscard]] Result<Reply> finish(std::int64_t req);
  // Sends without waiting for an answer (cancel on Ctrl-C).
  void send_only(std::string_view type, std::string body);

  const std::string& endpoint() const { return endpoint_; }
  zmq::context_t& context() { return ctx_; }
  const transport::ClientKeys& keys() const { return keys_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  Error unreachable() const;

 private:
  // {req, ...what fn writes}: the body of every request.
  template <typename Fn>
  static std::string request_body(std::int64_t req, Fn& fn) {
    protocol::Writer w;
    w.begin_map().kv("req", req);
    fn(w);
    w.end_map();
    return w.take();
  }
  [[nodiscard]] Result<Reply> exchange(std::string_view type, std::int64_t req, std::string body);
  [[nodiscard]] Status send_request(std::string_view type, std::string body);
  [[nodiscard]] Status connect();
  // UNAUTHENTICATED/BROKER_UNREACHABLE if the monitor saw the CURVE handshake fail.
  std::optional<Error> handshake_failure();
  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  zmq::context_t ctx_;
  zmq::socket_t dealer_;
  transport::ClientKeys keys_;
  zmq::socket_t monitor_;  // PAIR receiving the DEALER's handshake failures (CURVE only)
  std::int64_t next_req_ = 1;
  bool connected_ = false;
};

}  // namespace kbfleet::cli
