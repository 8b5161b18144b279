#pragma once
// Framing of kbfleet messages on ZeroMQ sockets (docs/protocol.md, "Frames"):
//   [routing id (ROUTER only)] "KBF/1" | type | msgpack body | zero or more data frames
// Receiving is bounded: at most kMaxFrames frames, bodies decoded with limits; a malformed
// message is returned with `error` set (and its peer, so a ROUTER can answer), never thrown.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "common/errors/error.hpp"
#include "common/protocol/wire.hpp"

namespace kbfleet::transport {

inline constexpr std::size_t kMaxFrames = 8;
inline constexpr std::int64_t kMaxMessageBytes = 16 << 20;  // ZMQ_MAXMSGSIZE on accepting sockets

enum class SocketKind { kRouter, kDealer };

struct Incoming {
  std::string peer;  // ROUTER routing id; empty on a DEALER
  // ZAP User-Id of the connection it came on (CURVE: set by the broker's ZAP handler, not by
  // the peer); empty without CURVE.
  std::string user_id;
  std::string type;
  std::optional<protocol::Body> body;
  std::vector<zmq::message_t> data;
  std::int64_t req = 0;  // the body's "req" field when present
  std::optional<Error> error;  // set when the message was malformed
};

// Receives one message without blocking. Returns false when none is waiting.
bool recv_message(zmq::socket_ref sock, SocketKind kind, Incoming& out,
                  const protocol::DecodeLimits& limits = {});

// Sends one message without blocking. Returns false if ZeroMQ could not queue it (peer gone on a
// ROUTER, or high-water mark reached); the caller decides whether that matters.
bool send_message(zmq::socket_ref sock, std::string_view peer, std::string_view type,
                  std::string_view body, std::vector<zmq::message_t> data = {});

// A bound ROUTER with linger 0 and the message size limit; returns the resolved endpoint.
Result<std::string> bind_router(zmq::socket_t& sock, const std::string& endpoint);
// Bind any socket; resolves "tcp://host:*" / port 0 to the real endpoint.
Result<std::string> bind_socket(zmq::socket_t& sock, const std::string& endpoint);
// A DEALER connected to `endpoint` with linger 0 and an optional routing id.
Result<void> connect_dealer(zmq::socket_t& sock, const std::string& endpoint, std::string_view identity);

}  // namespace kbfleet::transport
