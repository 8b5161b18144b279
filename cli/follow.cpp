#include "cli/follow.hpp"


#include <unistd.h>

#include <zmq_addon.hpp>

namespace kbfleet::cli {
namespace {

constexpr auto kQuietRepoll = std::chrono::milliseconds(1000);

class Follower {
 public:
  Follower(Client& client, std::string task_id, const FollowHooks& hooks)
      : client_(client), task_id_(std::move(task_id)), hooks_(hooks) {}

  Result<protocol::Event> run() {
    auto info = client_.call(protocol::msg::kInfo, [](protocol::Writer&) {});
    if (!info) return tl::unexpected(info.error());
    std::string events_ep(info->body.view().str_or("events_endpoint", ""));
    zmq::socket_t sub(client_.context(), zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    // The events endpoint is a CURVE server too; the broker applies the subscription only if
    // the task belongs to this key's tenant (docs/security.md).
    if (auto st = transport::set_curve_client(sub, client_.keys()); !st) return tl::unexpected(st.error());
    sub.set(zmq::sockopt::subscribe, protocol::task_topic(task_id_));
    sub.connect(events_ep);

    if (auto caught_up = replay(); !caught_up) return tl::unexpected(caught_up.error());
    if (done_) return *done_;
    int interrupts = 0;
    for (;;) {
      zmq::pollitem_t items[] = {{sub.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, hooks_.interrupt_fd, ZMQ_POLLIN, 0}};
      int n = zmq::poll(items, hooks_.interrupt_fd >= 0 ? 2 : 1, kQuietRepoll);
      if (hooks_.interrupt_fd >= 0 && (items[1].revents & ZMQ_POLLIN)) {
        char buf[256];
        (void)::read(hooks_.interrupt_fd, buf, sizeof buf);
        if (++interrupts > 1 || !hooks_.on_interrupt) {
          return make_error(ErrorCode::kCancelled,
                            "stopped waiting for task " + task_id_ + "; `kbfleet status " + task_id_ + "` shows how it ends");
        }
        hooks_.on_interrupt();
      }
      if (n == 0) {  // quiet: the tail of the stream may have been dropped
        if (auto r = replay(); !r) return tl::unexpected(r.error());
      }
      std::vector<zmq::message_t> frames;
      while (zmq::recv_multipart(sub, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
        if (frames.size() == 4) {
          auto body = protocol::Body::decode(std::string_view(static_cast<const char*>(frames[3].data()), frames[3].size()));
          if (body) {
            auto e = protocol::Event::decode(body->view());
            if (e && e->seq > next_) {
              if (auto r = replay(); !r) return tl::unexpected(r.error());  // gap
            } else if (e && e->seq == next_) {
              deliver(*e);
            }
          }
        }
        frames.clear();
        if (done_) return *done_;
      }
      if (done_) return *done_;
    }
  }

 private:
  void deliver(const protocol::Event& e) {
    next_ = e.seq + 1;
    if (hooks_.on_event) hooks_.on_event(e);
    if (e.type == protocol::event::kDone) done_ = e;
  }

  // Fetches everything from next_ that the broker holds.
  Result<bool> replay() {
    for (;;) {
      auto r = client_.call(protocol::msg::kEvents, [&](protocol::Writer& w) {
        w.kv("task_id", task_id_).kv("from_seq", next_).kv("max", 1000);
      });
      if (!r) return tl::unexpected(r.error());
      auto v = r->body.view();
      std::int64_t first = v.i64_or("first_seq", 1);
      if (first > next_) next_ = first;  // the head was trimmed from the backlog
      auto events = v.array_or_empty("events");
      if (!events) return tl::unexpected(events.error());
      for (const auto* obj : *events) {
        if (obj->type != msgpack::type::MAP) continue;
        auto e = protocol::Event::decode(protocol::MapView(obj));
        if (e && e->seq == next_) deliver(*e);
        if (done_) return true;
      }
      if (v.i64_or("next_seq", next_) > v.i64_or("last_seq", 0)) return true;
      if (events->empty()) return true;
    }
  }

  Client& client_;
  std::string task_id_;
  const FollowHooks& hooks_;
  std::int64_t next_ = 1;
  std::optional<protocol::Event> done_;
};

}  // namespace

Result<protocol::Event> follow(Client& client, const std::string& task_id, const FollowHooks& hooks) {
  try {
    return Follower(client, task_id, hooks).run();
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kBrokerUnreachable, std::string("event subscription failed: ") + e.what());
  }
}

}  // namespace kbfleet::cli
