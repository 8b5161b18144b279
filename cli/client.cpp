#include "cli/client.hpp"

#include "common/protocol/messages.hpp"
#include "common/transport/frames.hpp"

namespace kbfleet::cli {

Client::Client(std::string endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout), ctx_(1), dealer_(ctx_, zmq::socket_type::dealer) {}

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

Result<Reply> Client::exchange(std::string_view type, std::int64_t req, std::string body) {
  if (!connected_) {
    if (auto c = transport::connect_dealer(dealer_, endpoint_, ""); !c) return tl::unexpected(c.error());
    connected_ = true;
  }
  if (!transport::send_message(dealer_, "", type, body)) return tl::unexpected(unreachable());
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  transport::Incoming in;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return tl::unexpected(unreachable());
    zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, left);
    while (transport::recv_message(dealer_, transport::SocketKind::kDealer, in, protocol::DecodeLimits{})) {
      if (in.error) return tl::unexpected(*in.error);
      // req 0: the broker could not read our request's body, so it cannot echo our req; requests
      // are sequential, so the error is about this one.
      const bool unreadable = in.type == protocol::msg::kError && in.req == 0;
      if (in.req != req && !unreadable) continue;  // a late answer to an earlier, timed-out request
      if (in.type == protocol::msg::kError) return tl::unexpected(protocol::decode_error(in.body->view()));
      return Reply{in.type, std::move(*in.body), std::move(in.data)};
    }
  }
}

}  // namespace kbfleet::cli
