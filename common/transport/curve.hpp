#pragma once
// CURVE (RFC 26, CurveZMQ) options for kbfleet sockets. Every socket of a secured fleet is either
// a CURVE server (the broker's ROUTER and XPUB, with a ZAP domain so its ZAP handler decides who
// may connect) or a CURVE client that knows the server's public key (CLI, worker, tail).
// Must be called before bind/connect: libzmq reads the options when a connection starts.
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "common/errors/error.hpp"
#include "common/security/cert.hpp"

namespace kbfleet::transport {

// Keys of a CURVE client; an empty server_public_key means plain (NULL mechanism).
struct ClientKeys {
  security::KeyPair own;
  std::string server_public_key;
  bool enabled() const { return !server_public_key.empty(); }
};

// INTERNAL naming the option that failed.
[[nodiscard]] Status set_curve_server(zmq::socket_ref sock, const std::string& secret_key, std::string_view zap_domain);
[[nodiscard]] Status set_curve_client(zmq::socket_ref sock, const ClientKeys& keys);

// Loads client keys from a secret certificate and the broker's public certificate; both or
// neither must be given. INVALID_ARGUMENT/IO_ERROR from security::load_*.
[[nodiscard]] Result<ClientKeys> load_client_keys(const std::string& key_file, const std::string& broker_key_file);

// True for endpoints only this host can reach (tcp://127.*, localhost, [::1], ipc://, inproc://):
// plain mode there is the single-host development set-up; elsewhere the broker warns.
bool is_loopback_endpoint(const std::string& endpoint);

// The ZAP "User-Id" of a received frame (what the broker's ZAP handler returned for the peer's
// key), or "" on a socket without CURVE.
std::string user_id_of(const zmq::message_t& msg);

}  // namespace kbfleet::transport
