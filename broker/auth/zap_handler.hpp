#pragma once
// The broker's ZAP handler (RFC 27): a REP socket on inproc://zeromq.zap.01 in the broker's own
// zmq context, polled by the broker's loop like its other sockets (libzmq's I/O thread sends the
// request and waits asynchronously, so answering from the loop cannot deadlock).
//
// Guarantees (tests/broker/auth/zap_handler_test.cpp, tests/integration/security_test.cpp):
// - only the CURVE mechanism is accepted; NULL, PLAIN and GSSAPI peers are refused (400);
// - a CURVE key not in the current allow-list is refused (400): the connection never completes,
//   so no message of that peer reaches the broker;
// - a role is accepted only on its domain: client, worker and admin on kRouterDomain;
//   subscriber, client and admin on kEventsDomain;
// - an accepted peer's User-Id is its Z85 public key, which the broker maps to an identity for
//   every message it receives (so an allow-list reload applies to open connections too);
// - a malformed request is answered 500 and counted, never fatal.
#include <functional>
#include <string>

#include <zmq.hpp>

#include "broker/auth/allow_list.hpp"
#include "common/errors/error.hpp"

namespace kbfleet::broker {

inline constexpr const char* kRouterDomain = "kbfleet.router";
inline constexpr const char* kEventsDomain = "kbfleet.events";

class ZapHandler {
 public:
  // Called for every refused peer: reason ("unknown_key", "mechanism", "role_domain",
  // "malformed"), its Z85 key (may be empty), address and domain.
  using OnDeny = std::function<void(std::string_view reason, const std::string& key, const std::string& address,
                                    const std::string& domain)>;

  // Binds the handler; `allow` is borrowed and must outlive it (the broker swaps its content on
  // reload). IO_ERROR if the endpoint is taken (a second handler in this context).
  [[nodiscard]] static Result<std::unique_ptr<ZapHandler>> bind(zmq::context_t& ctx, const AllowList* const* allow,
                                                               OnDeny on_deny);
  zmq::socket_ref socket() { return sock_; }
  // Answers every request waiting on the socket.
  void on_readable();

 private:
  ZapHandler(zmq::context_t& ctx, const AllowList* const* allow, OnDeny on_deny);
  void answer(const std::vector<zmq::message_t>& request);
  zmq::socket_t sock_;
  const AllowList* const* allow_;
  OnDeny on_deny_;
};

}  // namespace kbfleet::broker
