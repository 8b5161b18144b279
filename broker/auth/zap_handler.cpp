#include "broker/auth/zap_handler.hpp"

#include <zmq_addon.hpp>

namespace kbfleet::broker {
namespace {

std::string str(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

bool role_allowed_on(Role role, const std::string& domain) {
  if (role == Role::kAdmin || role == Role::kClient) return domain == kRouterDomain || domain == kEventsDomain;
  if (role == Role::kWorker) return domain == kRouterDomain;
  return domain == kEventsDomain;  // subscriber
}

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& ctx, const AllowList* const* allow, OnDeny on_deny)
    : sock_(ctx, zmq::socket_type::rep), allow_(allow), on_deny_(std::move(on_deny)) {}

Result<std::unique_ptr<ZapHandler>> ZapHandler::bind(zmq::context_t& ctx, const AllowList* const* allow, OnDeny on_deny) {
  std::unique_ptr<ZapHandler> h(new ZapHandler(ctx, allow, std::move(on_deny)));
  try {
    h->sock_.set(zmq::sockopt::linger, 0);
    h->sock_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kIoError, std::string("cannot bind the ZAP handler on inproc://zeromq.zap.01: ") + e.what());
  }
  return h;
}

void ZapHandler::on_readable() {
  for (;;) {
    std::vector<zmq::message_t> request;
    try {
      if (!zmq::recv_multipart(sock_, std::back_inserter(request), zmq::recv_flags::dontwait)) return;
    } catch (const zmq::error_t&) {
      return;
    }
    answer(request);
  }
}

void ZapHandler::answer(const std::vector<zmq::message_t>& request) {
  // Request (RFC 27): version, request id, domain, address, routing id, mechanism, credentials...
  auto reply = [&](const char* code, const char* text, const std::string& user_id) {
    std::string version = "1.0";
    std::string request_id = request.size() > 1 ? str(request[1]) : "";
    zmq::message_t out[6] = {zmq::message_t(version), zmq::message_t(request_id), zmq::message_t(std::string(code)),
                             zmq::message_t(std::string(text)), zmq::message_t(user_id), zmq::message_t()};
    try {
      for (int i = 0; i < 6; ++i) sock_.send(out[i], i < 5 ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t&) {
      // The requesting connection is gone; REP resets for the next request.
    }
  };
  if (request.size() < 6 || str(request[0]) != "1.0") {
    on_deny_("malformed", "", "", "");
    return reply("500", "malformed ZAP request", "");
  }
  const std::string domain = str(request[2]);
  const std::string address = str(request[3]);
  const std::string mechanism = str(request[5]);
  if (mechanism != "CURVE" || request.size() != 7 || request[6].size() != 32) {
    on_deny_("mechanism", "", address, domain);
    return reply("400", "only CURVE is accepted", "");
  }
  char key[41] = {};
  zmq_z85_encode(key, static_cast<const std::uint8_t*>(request[6].data()), 32);
  const AllowList* list = *allow_;
  const Identity* id = list == nullptr ? nullptr : list->find(key);
  if (id == nullptr) {
    on_deny_("unknown_key", key, address, domain);
    return reply("400", "key not in the allow-list", "");
  }
  if (!role_allowed_on(id->role, domain)) {
    on_deny_("role_domain", key, address, domain);
    return reply("400", "role not accepted on this endpoint", "");
  }
  reply("200", "OK", key);
}

}  // namespace kbfleet::broker
