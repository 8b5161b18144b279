#include "common/transport/curve.hpp"

namespace kbfleet::transport {

Status set_curve_server(zmq::socket_ref sock, const std::string& secret_key, std::string_view zap_domain) {
  try {
    sock.set(zmq::sockopt::curve_server, 1);
    sock.set(zmq::sockopt::curve_secretkey, secret_key);
    // With a domain set, libzmq asks the handler on inproc://zeromq.zap.01 about every peer.
    sock.set(zmq::sockopt::zap_domain, std::string(zap_domain));
    return {};
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kInternal, std::string("CURVE server setsockopt: ") + e.what());
  }
}

Status set_curve_client(zmq::socket_ref sock, const ClientKeys& keys) {
  if (!keys.enabled()) return {};
  try {
    sock.set(zmq::sockopt::curve_serverkey, keys.server_public_key);
    sock.set(zmq::sockopt::curve_publickey, keys.own.public_key);
    sock.set(zmq::sockopt::curve_secretkey, keys.own.secret_key);
    return {};
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kInternal, std::string("CURVE client setsockopt: ") + e.what());
  }
}

Result<ClientKeys> load_client_keys(const std::string& key_file, const std::string& broker_key_file) {
  ClientKeys keys;
  if (key_file.empty() && broker_key_file.empty()) return keys;
  if (key_file.empty() || broker_key_file.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "CURVE needs both a key (--key / KBFLEET_KEY) and the broker's public key (--broker-key / "
                      "KBFLEET_BROKER_KEY)");
  }
  auto own = security::load_secret_certificate(key_file);
  if (!own) return tl::unexpected(own.error());
  auto server = security::load_public_key(broker_key_file);
  if (!server) return tl::unexpected(server.error());
  keys.own = std::move(*own);
  keys.server_public_key = std::move(*server);
  return keys;
}

bool is_loopback_endpoint(const std::string& endpoint) {
  for (const char* prefix : {"tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://"}) {
    if (endpoint.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

std::string user_id_of(const zmq::message_t& msg) {
  // zmq_msg_gets fails (EINVAL) when the property is absent, as with the NULL mechanism.
  const char* v = zmq_msg_gets(msg.handle(), "User-Id");
  return v == nullptr ? std::string() : std::string(v);
}

}  // namespace kbfleet::transport
