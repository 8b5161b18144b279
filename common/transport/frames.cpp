#include "common/transport/frames.hpp"

#include "common/protocol/messages.hpp"
#include "common/transport/curve.hpp"

namespace kbfleet::transport {
namespace {

// Discards the rest of a multipart message so the next recv starts at a message boundary.
void drain(zmq::socket_ref sock) {
  while (sock.get(zmq::sockopt::rcvmore)) {
    zmq::message_t skip;
    (void)sock.recv(skip, zmq::recv_flags::none);
  }
}

std::string frame_string(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

}  // namespace

bool recv_message(zmq::socket_ref sock, SocketKind kind, Incoming& out, const protocol::DecodeLimits& limits) {
  out = Incoming{};
  zmq::message_t first;
  auto got = sock.recv(first, zmq::recv_flags::dontwait);
  if (!got) return false;

  // A ROUTER sees the peer's routing id as an extra first frame.
  const std::size_t max_frames = kMaxFrames + (kind == SocketKind::kRouter ? 1 : 0);
  std::vector<zmq::message_t> frames;
  frames.push_back(std::move(first));
  while (frames.back().more()) {
    if (frames.size() > max_frames) {  // one frame over is enough to refuse; drop the rest
      drain(sock);
      break;
    }
    zmq::message_t next;
    (void)sock.recv(next, zmq::recv_flags::none);  // the rest of a multipart is already here
    frames.push_back(std::move(next));
  }
  std::size_t i = 0;
  if (kind == SocketKind::kRouter) {
    out.peer = frame_string(frames[i++]);
    // Every frame of a message carries its connection's metadata; read it off a peer's frame.
    out.user_id = user_id_of(frames[frames.size() > 1 ? 1 : 0]);
  }

  auto fail = [&](ErrorCode code, std::string msg) {
    out.error = Error{code, std::move(msg), {}};
    return true;
  };
  if (frames.size() > max_frames) {
    return fail(ErrorCode::kProtocolError, "too many frames (at most " + std::to_string(kMaxFrames) + ")");
  }
  if (frames.size() - i < 3) {
    return fail(ErrorCode::kProtocolError, "a message needs at least 3 frames: \"KBF/1\", type, body");
  }
  auto tag = frame_string(frames[i++]);
  if (tag != protocol::kProtocolTag) {
    if (tag.rfind("KBF/", 0) == 0) {
      return fail(ErrorCode::kUnsupportedVersion,
                  "protocol " + tag + " is not supported; this broker speaks " + std::string(protocol::kProtocolTag));
    }
    return fail(ErrorCode::kProtocolError, "frame 0 must be the protocol tag \"KBF/1\"");
  }
  out.type = frame_string(frames[i++]);
  if (out.type.size() > 64) return fail(ErrorCode::kProtocolError, "message type is too long");
  auto body = protocol::Body::decode(
      std::string_view(static_cast<const char*>(frames[i].data()), frames[i].size()), limits);
  ++i;
  if (!body) {
    out.error = body.error();
    return true;
  }
  out.req = body->view().i64_or("req", 0);
  out.body = std::move(*body);
  for (; i < frames.size(); ++i) out.data.push_back(std::move(frames[i]));
  return true;
}

bool send_message(zmq::socket_ref sock, std::string_view peer, std::string_view type, std::string_view body,
                  std::vector<zmq::message_t> data) {
  try {
    const auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
    if (!peer.empty()) {
      if (!sock.send(zmq::buffer(peer), more)) return false;
    }
    if (!sock.send(zmq::buffer(protocol::kProtocolTag), more)) return false;
    if (!sock.send(zmq::buffer(type), more)) return false;
    if (!sock.send(zmq::buffer(body), data.empty() ? zmq::send_flags::dontwait : more)) return false;
    for (std::size_t i = 0; i < data.size(); ++i) {
      auto flags = i + 1 == data.size() ? zmq::send_flags::dontwait : more;
      if (!sock.send(data[i], flags)) return false;
    }
    return true;
  } catch (const zmq::error_t&) {
    // EHOSTUNREACH on a ROUTER with mandatory routing, or a closed context: the peer is gone.
    return false;
  }
}

Result<std::string> bind_socket(zmq::socket_t& sock, const std::string& endpoint) {
  try {
    sock.set(zmq::sockopt::linger, 0);
    sock.bind(endpoint);
    return sock.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kIoError,
                      "cannot bind " + endpoint + ": " + e.what() + " (is the address in use or malformed?)");
  }
}

Result<std::string> bind_router(zmq::socket_t& sock, const std::string& endpoint) {
  try {
    sock.set(zmq::sockopt::maxmsgsize, kMaxMessageBytes);
    sock.set(zmq::sockopt::sndhwm, 100000);
    sock.set(zmq::sockopt::rcvhwm, 100000);
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kInternal, std::string("setsockopt: ") + e.what());
  }
  return bind_socket(sock, endpoint);
}

Result<void> connect_dealer(zmq::socket_t& sock, const std::string& endpoint, std::string_view identity) {
  try {
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::maxmsgsize, kMaxMessageBytes);
    if (!identity.empty()) sock.set(zmq::sockopt::routing_id, zmq::buffer(identity));
    sock.connect(endpoint);
    return {};
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot connect to " + endpoint + ": " + e.what() +
                          " (expected an endpoint such as tcp://127.0.0.1:7700)");
  }
}

}  // namespace kbfleet::transport
