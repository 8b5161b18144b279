#include "bench/dispatch/events_load.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"
#include "common/transport/frames.hpp"

namespace kbfleet::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kGiveUp = std::chrono::seconds(300);

struct Shared {
  std::atomic<int> synced{0};     // subscribers that have seen a `done` (their subscription is live)
  std::atomic<bool> abort{false};
};

struct SubResult {
  std::int64_t live = 0, replayed = 0, outputs = 0;
  bool complete = false;
  Clock::time_point done_at;
};

// Marks the event in an encoded Event body as seen; returns its seq (0 if unreadable). `fresh`
// tells whether it was new.
std::int64_t take_event(std::string_view body, std::vector<char>& seen, std::int64_t& outputs, bool& is_done,
                        bool& fresh) {
  fresh = false;
  auto b = protocol::Body::decode(body);
  if (!b) return 0;
  auto v = b->view();
  const std::int64_t seq = v.i64_or("seq", 0);
  const auto type = v.str_or("type", "");
  is_done = type == protocol::event::kDone;
  if (seq <= 0) return 0;
  if (static_cast<std::size_t>(seq) >= seen.size()) seen.resize(static_cast<std::size_t>(seq) * 2 + 1, 0);
  if (!seen[static_cast<std::size_t>(seq)]) {
    seen[static_cast<std::size_t>(seq)] = 1;
    fresh = true;
    if (type == protocol::event::kOutput) ++outputs;
  }
  return seq;
}

// Asks the broker for the events of `task_id` from `from` (at most 5000); marks them and sets
// *done_seq if `done` was among them. Returns false on no reply.
bool replay(zmq::socket_t& dealer, const std::string& task_id, std::int64_t from, std::int64_t& req,
            std::vector<char>& seen, SubResult& r, std::int64_t* done_seq = nullptr) {
  protocol::Writer w;
  w.begin_map().kv("req", ++req).kv("task_id", task_id).kv("from_seq", from).kv("max", std::int64_t{5000}).end_map();
  transport::send_message(dealer, "", protocol::msg::kEvents, w.take());
  transport::Incoming in;
  protocol::DecodeLimits limits;
  limits.max_bytes = 16u << 20;
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < until) {
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(100));
    while (transport::recv_message(dealer, transport::SocketKind::kDealer, in, limits)) {
      if (in.req != req || !in.body) continue;
      auto events = in.body->view().array_or_empty("events");
      if (!events) return false;
      for (const auto* e : *events) {
        msgpack::sbuffer buf;
        msgpack::pack(buf, *e);
        bool is_done = false, fresh = false;
        auto seq = take_event(std::string_view(buf.data(), buf.size()), seen, r.outputs, is_done, fresh);
        r.replayed += fresh;
        if (is_done && done_seq != nullptr) *done_seq = seq;
      }
      return true;
    }
  }
  return false;
}

void subscriber(zmq::context_t& ctx, const std::string& router, const std::string& events, Shared& shared,
                SubResult& r) {
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  sub.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::linger, 0);
  sub.connect(events);
  dealer.connect(router);
  sub.set(zmq::sockopt::subscribe, "task.");
  std::vector<char> seen;
  std::string topic;  // of the measured task: the first topic carrying `output`
  std::int64_t done_seq = 0, req = 0;
  bool synced = false;
  std::vector<zmq::message_t> ev;
  const auto until = Clock::now() + kGiveUp;
  auto last_event = Clock::now();
  while (!shared.abort && Clock::now() < until && done_seq == 0) {
    zmq::pollitem_t items[] = {{sub.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(50));
    if (!topic.empty() && Clock::now() - last_event > std::chrono::seconds(1)) {
      // Quiet for a second: `done` itself may have been dropped at the high-water mark
      // (docs/protocol.md: ask `events` again). Replay from the first hole up to the end.
      last_event = Clock::now();
      std::int64_t got_done = 0, s = 1;
      for (;;) {  // until `done` or nothing new (the task is still running)
        while (static_cast<std::size_t>(s) < seen.size() && seen[static_cast<std::size_t>(s)]) ++s;
        const auto before = r.replayed;
        if (!replay(dealer, topic.substr(5), s, req, seen, r, &got_done) || got_done > 0 || r.replayed == before) break;
      }
      if (got_done > 0) done_seq = got_done;
      continue;
    }
    for (ev.clear(); zmq::recv_multipart(sub, std::back_inserter(ev), zmq::recv_flags::dontwait); ev.clear()) {
      if (ev.size() != 4) continue;
      const std::string_view t = ev[0].to_string_view();
      const std::string_view body(static_cast<const char*>(ev[3].data()), ev[3].size());
      if (topic.empty()) {
        auto b = protocol::Body::decode(body);
        if (!b) continue;
        const auto type = b->view().str_or("type", "");
        if (type == protocol::event::kDone && !synced) {
          synced = true;
          ++shared.synced;
        }
        if (type != protocol::event::kOutput && type != protocol::event::kStarted) continue;
        if (type == protocol::event::kStarted && b->view().str_or("plugin", "") == "kbfleet.noop") continue;
        topic = std::string(t);
      }
      if (t != topic) continue;
      ++r.live;
      last_event = Clock::now();
      bool is_done = false, fresh = false;
      auto seq = take_event(body, seen, r.outputs, is_done, fresh);
      if (is_done) done_seq = seq;
    }
  }
  if (done_seq == 0) return;
  // Fill the holes the high-water mark left, oldest first.
  const std::string task_id = topic.substr(5);
  for (std::int64_t s = 1; s <= done_seq;) {
    if (static_cast<std::size_t>(s) < seen.size() && seen[static_cast<std::size_t>(s)]) {
      ++s;
      continue;
    }
    if (!replay(dealer, task_id, s, req, seen, r)) return;
    if (static_cast<std::size_t>(s) >= seen.size() || !seen[static_cast<std::size_t>(s)]) return;  // trimmed backlog
  }
  r.complete = true;
  r.done_at = Clock::now();
}

}  // namespace

EventsResult run_events_load(const std::string& router, const std::string& events, const EventsSpec& spec) {
  EventsResult out;
  zmq::context_t ctx(2);
  Shared shared;
  std::vector<SubResult> results(static_cast<std::size_t>(spec.subscribers));
  std::vector<std::thread> threads;
  for (int i = 0; i < spec.subscribers; ++i) {
    threads.emplace_back(subscriber, std::ref(ctx), router, events, std::ref(shared),
                         std::ref(results[static_cast<std::size_t>(i)]));
  }
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(router);
  auto submit = [&](const std::string& plugin, const std::string& handler, std::int64_t req) {
    protocol::Writer w;
    w.begin_map().kv("req", req).kv("plugin", plugin).kv("handler", handler).end_map();
    transport::send_message(dealer, "", protocol::msg::kSubmit, w.take());
  };
  // Every SUB's subscription must have reached the broker before the measured task starts.
  const auto sync_until = Clock::now() + std::chrono::seconds(10);
  for (std::int64_t req = 1; shared.synced < spec.subscribers && Clock::now() < sync_until; ++req) {
    submit("kbfleet.noop", "noop", req);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // pacing of probe tasks, not a sync
  }
  if (shared.synced < spec.subscribers) {
    shared.abort = true;
    for (auto& t : threads) t.join();
    out.error = "the subscribers never saw a probe task finish (is a worker with --builtin-noop connected?)";
    return out;
  }
  const auto t0 = Clock::now();
  submit(spec.plugin, spec.handler, 1000000);
  for (auto& t : threads) t.join();
  out.complete = true;
  Clock::time_point last = t0;
  out.output_events = spec.lines;
  for (const auto& r : results) {
    out.live += r.live;
    out.replayed += r.replayed;
    out.complete = out.complete && r.complete;
    out.output_events = std::min(out.output_events, r.outputs);
    last = std::max(last, r.done_at);
  }
  out.seconds = std::chrono::duration<double>(last - t0).count();
  out.lines_per_s = out.complete && out.seconds > 0 ? static_cast<double>(spec.lines) / out.seconds : 0;
  if (!out.complete) out.error = "a subscriber did not get every event (backlog trimmed or no reply)";
  return out;
}

}  // namespace kbfleet::bench
