#include "cli/client.hpp"

#include <cstring>

#include "common/protocol/messages.hpp"
#include "common/transport/frames.hpp"

namespace kbfleet::cli {

Client::Client(std::string endpoint, std::chrono::milliseconds timeout, transport::ClientKeys keys)
    : endpoint_(std::move(endpoint)),
      timeout_(timeout),
      ctx_(1),
      dealer_(ctx_, zmq::socket_type::dealer),
      keys_(std::move(keys)) {}

Status Client::connect() {
  if (keys_.enabled()) {
    if (auto st = transport::set_curve_client(dealer_, keys_); !st) return st;
    // A refused key closes the connection during the handshake, so no reply would ever come:
    // the socket monitor reports why, before the request timeout.
    const std::string ep = "inproc://kbfleet-cli-monitor";
    if (zmq_socket_monitor(dealer_.handle(), ep.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0) {
      return make_error(ErrorCode::kInternal, std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
    }
    monitor_ = zmq::socket_t(ctx_, zmq::socket_type::pair);
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(ep);
  }
  return transport::connect_dealer(dealer_, endpoint_, "");
}

std::optional<Error> Client::handshake_failure() {
  if (!monitor_) return std::nullopt;
  zmq::message_t event;
  while (monitor_.recv(event, zmq::recv_flags::dontwait)) {
    // Frame 1: uint16 event + uint32 value (for AUTH, the ZAP status code); frame 2: endpoint.
    std::uint16_t id = 0;
    std::uint32_t value = 0;
    if (event.size() >= 6) {
      std::memcpy(&id, event.data(), 2);
      std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
    }
    while (monitor_.get(zmq::sockopt::rcvmore)) (void)monitor_.recv(event, zmq::recv_flags::none);
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      return Error{ErrorCode::kUnauthenticated,
                   "the broker at " + endpoint_ + " refused this client's key (ZAP status " + std::to_string(value) +
                       "): its public key " + keys_.own.public_key +
                       " is not in the broker's allow-list for this endpoint; ask the operator to add it (--key / KBFLEET_KEY)",
                   {{"endpoint", endpoint_}}};
    }
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
      return Error{ErrorCode::kUnauthenticated,
                   "the CURVE handshake with the broker at " + endpoint_ +
                       " failed; is --broker-key (KBFLEET_BROKER_KEY) the broker's public key, and does the broker run "
                       "with --curve-secret?",
                   {{"endpoint", endpoint_}}};
    }
  }
  return std::nullopt;
}

Error Client::unreachable() const {
  return Error{ErrorCode::kBrokerUnreachable,
               "no answer from the broker at " + endpoint_ + " within " + std::to_string(timeout_.count()) +
                   " ms; is kbfleet-broker running there? (set --broker or KBFLEET_BROKER)",
               {{"endpoint", endpoint_}}};
}

void Client::send_only(std::string_view type, std::string body) {
  if (!connected_) return;
  transport::send_message(dealer_, "", type, body);
}

Status Client::send_request(std::string_view type, std::string body) {
  if (!connected_) {
    if (auto c = connect(); !c) return c;
    connected_ = true;
  }
  if (!transport::send_message(dealer_, "", type, body)) return tl::unexpected(unreachable());
  return {};
}

Result<Reply> Client::exchange(std::string_view type, std::int64_t req, std::string body) {
  if (auto st = send_request(type, std::move(body)); !st) return tl::unexpected(st.error());
  return finish(req);
}

Result<Reply> Client::finish(std::int64_t req) {
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  transport::Incoming in;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return tl::unexpected(unreachable());
    zmq::pollitem_t items[] = {{dealer_.handle(), 0, ZMQ_POLLIN, 0}, {monitor_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, monitor_ ? 2 : 1, left);
    if (auto failed = handshake_failure()) return tl::unexpected(*failed);
    while (transport::recv_message(dealer_, transport::SocketKind::kDealer, in, protocol::DecodeLimits{})) {
      if (in.error) return tl::unexpected(*in.error);
      // req 0: the broker could not read our request's body, so it cannot echo our req; replies
      // come in request order, so the error is about this one.
      const bool unreadable = in.type == protocol::msg::kError && in.req == 0;
      if (in.req != req && !unreadable) continue;  // a late answer to an earlier, timed-out request
      if (in.type == protocol::msg::kError) return tl::unexpected(protocol::decode_error(in.body->view()));
      return Reply{in.type, std::move(*in.body), std::move(in.data)};
    }
  }
}

}  // namespace kbfleet::cli
