// The ZAP handler (broker/auth/zap_handler.hpp) in front of a real CURVE ROUTER on loopback.
#include <cstring>

#include <catch2/catch.hpp>
#include <zmq_addon.hpp>

#include "broker/auth/zap_handler.hpp"
#include "common/security/cert.hpp"
#include "common/transport/curve.hpp"

using namespace kbfleet;
using namespace kbfleet::broker;
using namespace std::chrono_literals;

namespace {

struct Server {
  zmq::context_t ctx{1};
  security::KeyPair keys = *security::generate_keypair();
  AllowList list;
  const AllowList* view = &list;
  std::vector<std::string> denied;
  std::unique_ptr<ZapHandler> zap;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  std::string endpoint;

  explicit Server(const std::string& allow_text) {
    list = *AllowList::parse(allow_text, "test", ".");
    zap = *ZapHandler::bind(ctx, &view, [this](std::string_view reason, const std::string&, const std::string&,
                                                const std::string&) { denied.emplace_back(reason); });
    REQUIRE(transport::set_curve_server(router, keys.secret_key, kRouterDomain));
    router.set(zmq::sockopt::linger, 0);
    router.bind("tcp://127.0.0.1:*");
    endpoint = router.get(zmq::sockopt::last_endpoint);
  }

  // Serves ZAP until the router has a message (returns its frames) or the deadline passes.
  std::vector<zmq::message_t> serve_until_message(std::chrono::milliseconds deadline,
                                                  const std::function<bool()>& stop = nullptr) {
    auto end = std::chrono::steady_clock::now() + deadline;
    std::vector<zmq::message_t> frames;
    while (std::chrono::steady_clock::now() < end && !(stop && stop())) {
      zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}, {zap->socket().handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, 50ms);
      if (items[1].revents & ZMQ_POLLIN) zap->on_readable();
      if ((items[0].revents & ZMQ_POLLIN) && zmq::recv_multipart(router, std::back_inserter(frames))) return frames;
    }
    return frames;
  }
};

struct ClientSocket {
  zmq::context_t ctx{1};
  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
  zmq::socket_t monitor{ctx, zmq::socket_type::pair};
  ClientSocket(const std::string& endpoint, const security::KeyPair& own, const std::string& server_key) {
    REQUIRE(transport::set_curve_client(dealer, {own, server_key}));
    dealer.set(zmq::sockopt::linger, 0);
    REQUIRE(zmq_socket_monitor(dealer.handle(), "inproc://m", ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0);
    monitor.connect("inproc://m");
    dealer.connect(endpoint);
    dealer.send(zmq::str_buffer("hello"), zmq::send_flags::dontwait);
  }
  // The ZAP status code of a refused handshake, or 0 if none was seen yet.
  std::uint32_t auth_failure() {
    zmq::message_t ev;
    if (!monitor.recv(ev, zmq::recv_flags::dontwait)) return 0;
    std::uint32_t value = 0;
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    while (monitor.get(zmq::sockopt::rcvmore)) (void)monitor.recv(ev);
    return value;
  }
};

}  // namespace

TEST_CASE("a listed key connects and its messages carry its public key as User-Id", "[broker][auth][zap]") {
  auto alice = *security::generate_keypair();
  Server server(alice.public_key + " acme client\n");
  ClientSocket client(server.endpoint, alice, server.keys.public_key);
  auto frames = server.serve_until_message(10s);
  REQUIRE(frames.size() == 2);
  CHECK(frames[1].to_string() == "hello");
  CHECK(transport::user_id_of(frames[1]) == alice.public_key);
  CHECK(server.denied.empty());
}

TEST_CASE("an unknown key is refused at the handshake and nothing it sends arrives", "[broker][auth][zap]") {
  auto alice = *security::generate_keypair();
  auto mallory = *security::generate_keypair();
  Server server(alice.public_key + " acme client\n");
  ClientSocket client(server.endpoint, mallory, server.keys.public_key);
  std::uint32_t status = 0;
  auto frames = server.serve_until_message(10s, [&] { return (status = client.auth_failure()) != 0; });
  CHECK(frames.empty());
  CHECK(status == 400);
  REQUIRE(!server.denied.empty());
  CHECK(server.denied[0] == "unknown_key");
}

TEST_CASE("a subscriber key is refused on the router domain", "[broker][auth][zap]") {
  auto sub = *security::generate_keypair();
  Server server(sub.public_key + " acme subscriber\n");
  ClientSocket client(server.endpoint, sub, server.keys.public_key);
  std::uint32_t status = 0;
  auto frames = server.serve_until_message(10s, [&] { return (status = client.auth_failure()) != 0; });
  CHECK(frames.empty());
  CHECK(status == 400);
  REQUIRE(!server.denied.empty());
  CHECK(server.denied[0] == "role_domain");
}

TEST_CASE("a malformed ZAP request is answered 500 and the handler keeps working", "[broker][auth][zap]") {
  Server server("");
  zmq::socket_t req(server.ctx, zmq::socket_type::req);
  req.connect("inproc://zeromq.zap.01");
  req.send(zmq::str_buffer("garbage"), zmq::send_flags::none);
  std::vector<zmq::message_t> reply;
  for (int i = 0; i < 100 && reply.empty(); ++i) {
    zmq::pollitem_t item{server.zap->socket().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 50ms);
    server.zap->on_readable();
    (void)zmq::recv_multipart(req, std::back_inserter(reply), zmq::recv_flags::dontwait);
  }
  REQUIRE(reply.size() == 6);
  CHECK(reply[2].to_string() == "500");
  CHECK(server.denied == std::vector<std::string>{"malformed"});
}
