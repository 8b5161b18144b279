// recv_message/send_message on real ZeroMQ ROUTER/DEALER pairs over inproc://
// (common/transport/frames.hpp, docs/protocol.md "Frames").
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/protocol/messages.hpp"
#include "common/transport/frames.hpp"

namespace kbfleet::transport {
namespace {

using protocol::Writer;

// A bound ROUTER and a DEALER with routing id "peer-1", connected over inproc.
struct Pair {
  zmq::context_t ctx;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};

  Pair() {
    static int n = 0;
    const std::string endpoint = "inproc://frames-test-" + std::to_string(++n);
    REQUIRE(bind_router(router, endpoint).has_value());
    REQUIRE(connect_dealer(dealer, endpoint, "peer-1").has_value());
  }
};

// Waits (bounded) for a message and receives it; fails the test when none arrives in time.
Incoming receive(zmq::socket_t& sock, SocketKind kind) {
  zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0}};
  REQUIRE(zmq::poll(items, 1, std::chrono::milliseconds{5000}) == 1);
  Incoming in;
  REQUIRE(recv_message(sock, kind, in));
  return in;
}

void send_raw(zmq::socket_t& sock, const std::vector<std::string>& frames) {
  std::vector<zmq::const_buffer> parts;
  for (const auto& f : frames) parts.push_back(zmq::buffer(f));
  REQUIRE(zmq::send_multipart(sock, parts));
}

std::string request_body(std::int64_t req) {
  Writer w;
  w.begin_map().kv("req", req).kv("task_id", "abc").end_map();
  return w.take();
}

std::vector<zmq::message_t> data_frames(std::vector<std::string> contents) {
  std::vector<zmq::message_t> out;
  for (const auto& c : contents) out.emplace_back(c.data(), c.size());
  return out;
}

std::string as_string(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

// A good message after a bad one proves the socket was left at a message boundary.
void expect_next_message_is_good(Pair& p) {
  REQUIRE(send_message(p.dealer, "", "status", request_body(99)));
  auto in = receive(p.router, SocketKind::kRouter);
  CHECK_FALSE(in.error.has_value());
  CHECK(in.peer == "peer-1");
  CHECK(in.type == "status");
  CHECK(in.req == 99);
  CHECK(in.data.empty());
}

}  // namespace

TEST_CASE("a message with data frames crosses a ROUTER/DEALER pair both ways", "[transport][frames]") {
  Pair p;
  REQUIRE(send_message(p.dealer, "", "upload_chunk", request_body(7), data_frames({"bytes-1", std::string("\0\1", 2)})));
  auto in = receive(p.router, SocketKind::kRouter);
  REQUIRE_FALSE(in.error.has_value());
  CHECK(in.peer == "peer-1");
  CHECK(in.type == "upload_chunk");
  CHECK(in.req == 7);
  REQUIRE(in.body.has_value());
  CHECK(in.body->view().str("task_id").value() == "abc");
  REQUIRE(in.data.size() == 2);
  CHECK(as_string(in.data[0]) == "bytes-1");
  CHECK(as_string(in.data[1]) == std::string("\0\1", 2));

  REQUIRE(send_message(p.router, in.peer, "chunk", request_body(7), data_frames({"reply"})));
  auto back = receive(p.dealer, SocketKind::kDealer);
  REQUIRE_FALSE(back.error.has_value());
  CHECK(back.peer.empty());
  CHECK(back.type == "chunk");
  CHECK(back.req == 7);
  REQUIRE(back.data.size() == 1);
  CHECK(as_string(back.data[0]) == "reply");
}

TEST_CASE("the frames on the wire are tag, type, body and data", "[transport][frames]") {
  Pair p;
  REQUIRE(send_message(p.dealer, "", "info", request_body(1), data_frames({"d"})));
  std::vector<zmq::message_t> frames;
  zmq::pollitem_t items[] = {{p.router.handle(), 0, ZMQ_POLLIN, 0}};
  REQUIRE(zmq::poll(items, 1, std::chrono::milliseconds{5000}) == 1);
  REQUIRE(zmq::recv_multipart(p.router, std::back_inserter(frames)));
  REQUIRE(frames.size() == 5);
  CHECK(as_string(frames[0]) == "peer-1");
  CHECK(as_string(frames[1]) == "KBF/1");
  CHECK(as_string(frames[2]) == "info");
  CHECK(as_string(frames[3]) == request_body(1));
  CHECK(as_string(frames[4]) == "d");
}

TEST_CASE("recv_message returns false when nothing is waiting", "[transport][frames]") {
  Pair p;
  Incoming in;
  CHECK_FALSE(recv_message(p.router, SocketKind::kRouter, in));
  CHECK_FALSE(recv_message(p.dealer, SocketKind::kDealer, in));
}

TEST_CASE("a malformed message is reported with its peer and the socket stays usable", "[transport][frames]") {
  Pair p;
  auto expect_error = [&](ErrorCode code, const std::string& text) {
    auto in = receive(p.router, SocketKind::kRouter);
    CHECK(in.peer == "peer-1");
    CHECK(in.error.has_value());
    if (in.error) {
      CHECK(in.error->code == code);
      CHECK_THAT(in.error->message, Catch::Contains(text));
      CHECK_FALSE(in.body.has_value());
    }
    expect_next_message_is_good(p);
  };

  SECTION("a wrong protocol tag") {
    send_raw(p.dealer, {"XXX", "info", request_body(1)});
    expect_error(ErrorCode::kProtocolError, "frame 0 must be the protocol tag");
  }
  SECTION("another protocol version") {
    send_raw(p.dealer, {"KBF/2", "info", request_body(1)});
    expect_error(ErrorCode::kUnsupportedVersion, "protocol KBF/2 is not supported");
  }
  SECTION("fewer than 3 frames") {
    send_raw(p.dealer, {"KBF/1", "info"});
    expect_error(ErrorCode::kProtocolError, "at least 3 frames");
  }
  SECTION("a single empty frame") {
    send_raw(p.dealer, {""});
    expect_error(ErrorCode::kProtocolError, "at least 3 frames");
  }
  SECTION("a malformed body") {
    send_raw(p.dealer, {"KBF/1", "info", "\xc1"});
    expect_error(ErrorCode::kProtocolError, "malformed msgpack body");
  }
  SECTION("a body that is not a map") {
    send_raw(p.dealer, {"KBF/1", "info", "\x91\x01"});
    expect_error(ErrorCode::kProtocolError, "must be a msgpack map");
  }
  SECTION("a map32 bomb body") {
    send_raw(p.dealer, {"KBF/1", "info", std::string("\xdf\xff\xff\xff\xff\xa1k\x01\x02", 9)});
    expect_error(ErrorCode::kProtocolError, "map size overflow");
  }
  SECTION("a type name over 64 characters") {
    send_raw(p.dealer, {"KBF/1", std::string(65, 't'), request_body(1)});
    expect_error(ErrorCode::kProtocolError, "type is too long");
  }
  SECTION("nine frames, one over the limit") {
    // On a ROUTER the routing id is a tenth frame; a 9-frame message must not pass as 8.
    send_raw(p.dealer, {"KBF/1", "info", request_body(1), "1", "2", "3", "4", "5", "6"});
    expect_error(ErrorCode::kProtocolError, "too many frames");
  }
  SECTION("a hundred frames") {
    std::vector<std::string> frames{"KBF/1", "info", request_body(1)};
    frames.resize(100, "x");
    send_raw(p.dealer, frames);
    expect_error(ErrorCode::kProtocolError, "too many frames");
  }
}

TEST_CASE("eight frames, the documented maximum, are accepted", "[transport][frames]") {
  Pair p;
  send_raw(p.dealer, {"KBF/1", "info", request_body(3), "1", "2", "3", "4", "5"});
  auto in = receive(p.router, SocketKind::kRouter);
  REQUIRE_FALSE(in.error.has_value());
  CHECK(in.req == 3);
  CHECK(in.data.size() == 5);
  expect_next_message_is_good(p);
}

TEST_CASE("a DEALER refuses more than eight frames from the broker", "[transport][frames]") {
  Pair p;
  REQUIRE(send_message(p.dealer, "", "ready", request_body(1)));
  auto in = receive(p.router, SocketKind::kRouter);
  REQUIRE_FALSE(in.error.has_value());
  send_raw(p.router, {"peer-1", "KBF/1", "task", request_body(1), "1", "2", "3", "4", "5", "6"});
  auto bad = receive(p.dealer, SocketKind::kDealer);
  REQUIRE(bad.error.has_value());
  CHECK(bad.error->code == ErrorCode::kProtocolError);
  CHECK(bad.peer.empty());

  REQUIRE(send_message(p.router, "peer-1", "task", request_body(2)));
  auto good = receive(p.dealer, SocketKind::kDealer);
  CHECK_FALSE(good.error.has_value());
  CHECK(good.req == 2);
}

TEST_CASE("recv_message applies the caller's decode limits", "[transport][frames]") {
  Pair p;
  protocol::DecodeLimits limits;
  limits.max_bytes = 8;
  Writer w;
  w.begin_map().kv("req", 1).kv("pad", std::string(32, 'p')).end_map();
  REQUIRE(send_message(p.dealer, "", "info", w.take()));
  zmq::pollitem_t items[] = {{p.router.handle(), 0, ZMQ_POLLIN, 0}};
  REQUIRE(zmq::poll(items, 1, std::chrono::milliseconds{5000}) == 1);
  Incoming in;
  REQUIRE(recv_message(p.router, SocketKind::kRouter, in, limits));
  REQUIRE(in.error.has_value());
  CHECK(in.error->code == ErrorCode::kProtocolError);
  CHECK_THAT(in.error->message, Catch::Contains("exceeds the limit"));
  CHECK(in.peer == "peer-1");
}

TEST_CASE("binding and connecting report bad endpoints as errors", "[transport][frames]") {
  zmq::context_t ctx;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  auto bound = bind_router(router, "tcp://127.0.0.1:*");
  REQUIRE(bound.has_value());
  CHECK_THAT(*bound, Catch::StartsWith("tcp://127.0.0.1:"));
  CHECK(bound->back() != '*');

  zmq::socket_t other{ctx, zmq::socket_type::router};
  auto again = bind_router(other, *bound);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == ErrorCode::kIoError);

  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
  auto bad = connect_dealer(dealer, "not-an-endpoint", "");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == ErrorCode::kInvalidArgument);
}

}  // namespace kbfleet::transport
