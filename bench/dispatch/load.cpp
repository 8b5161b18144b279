#include "bench/dispatch/load.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"
#include "common/transport/frames.hpp"

namespace kbfleet::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kLostAfter = std::chrono::seconds(10);

double self_cpu_s() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Drops the entries (task -> sent at) older than kLostAfter; returns how many: those tasks never
// completed and count as lost.
template <typename Map>
std::int64_t forget_lost(Map& sent, Clock::time_point now) {
  return static_cast<std::int64_t>(std::erase_if(sent, [&](const auto& kv) { return now - kv.second > kLostAfter; }));
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

// The measured interval and the bookkeeping common to both systems.
class Meter {
 public:
  explicit Meter(const LoadSpec& spec) : spec_(spec) {}

  void on_sent(Clock::time_point now, std::int64_t in_flight) {
    if (!filled_ && in_flight >= spec_.window) {
      filled_ = true;
      start_ = now + std::chrono::microseconds(static_cast<std::int64_t>(spec_.warmup_s * 1e6));
      end_ = start_ + std::chrono::microseconds(static_cast<std::int64_t>(spec_.seconds * 1e6));
    }
  }
  void on_done(Clock::time_point sent, Clock::time_point done) {
    if (!measuring_) return;
    if (done >= start_ && done < end_) ++completed_;
    if (sent >= start_ && done < end_) lat_us_.push_back(std::chrono::duration<double, std::micro>(done - sent).count());
  }
  // Called every loop turn; false once the interval is over.
  bool tick(Clock::time_point now) {
    if (filled_ && !measuring_ && now >= start_) {
      measuring_ = true;
      cpu0_ = self_cpu_s();
      if (spec_.on_measure_start) spec_.on_measure_start();
    }
    if (measuring_ && now >= end_) {
      if (!ended_ && spec_.on_measure_end) spec_.on_measure_end();
      if (!ended_) cpu1_ = self_cpu_s();
      ended_ = true;
      return false;
    }
    // A system that never fills the window still stops: 60 s at most.
    return now - begun_ < std::chrono::seconds(60) + std::chrono::microseconds(static_cast<std::int64_t>(spec_.seconds * 1e6));
  }
  LoadResult result() {
    LoadResult r;
    r.completed = completed_;
    r.seconds = spec_.seconds;
    r.tasks_per_s = measuring_ ? static_cast<double>(completed_) / spec_.seconds : 0;
    r.p50_us = percentile(lat_us_, 0.50);
    r.p90_us = percentile(lat_us_, 0.90);
    r.p99_us = percentile(lat_us_, 0.99);
    r.p999_us = percentile(lat_us_, 0.999);
    r.client_cpu_s = cpu1_ - cpu0_;
    return r;
  }

 private:
  const LoadSpec& spec_;
  Clock::time_point begun_ = Clock::now();
  Clock::time_point start_, end_;
  bool filled_ = false, measuring_ = false, ended_ = false;
  std::int64_t completed_ = 0;
  std::vector<double> lat_us_;
  double cpu0_ = 0, cpu1_ = 0;
};

void tune(zmq::socket_t& s) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, 0);
  s.set(zmq::sockopt::rcvhwm, 0);
}

// Drops the SUB's backlog of events (of earlier tasks) before the load starts.
void drain(zmq::socket_t& s) {
  std::vector<zmq::message_t> m;
  while (zmq::recv_multipart(s, std::back_inserter(m), zmq::recv_flags::dontwait)) m.clear();
}

std::string_view type_of_event(const zmq::message_t& body) {
  static thread_local std::optional<protocol::Body> decoded;
  auto b = protocol::Body::decode(std::string_view(static_cast<const char*>(body.data()), body.size()));
  if (!b) return {};
  decoded = std::move(*b);
  return decoded->view().str_or("type", "");
}

// Submits one task at a time until its `done` is seen on the SUB: the subscription is live.
bool sync_subscription(zmq::socket_t& dealer, zmq::socket_t& sub, const LoadSpec& spec) {
  const auto until = Clock::now() + std::chrono::seconds(10);
  transport::Incoming in;
  std::vector<zmq::message_t> ev;
  for (std::int64_t req = 1; Clock::now() < until; ++req) {
    transport::send_message(dealer, "", protocol::msg::kSubmit, submit_body(spec, req));
    std::string id;
    const auto round = Clock::now() + std::chrono::milliseconds(300);
    while (Clock::now() < round) {
      zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}, {sub.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(20));
      while (transport::recv_message(dealer, transport::SocketKind::kDealer, in)) {
        if (in.type == protocol::msg::kSubmitted && in.req == req) id = std::string(in.body->view().str_or("task_id", ""));
      }
      for (ev.clear(); zmq::recv_multipart(sub, std::back_inserter(ev), zmq::recv_flags::dontwait); ev.clear()) {
        if (ev.size() == 4 && !id.empty() && ev[0].to_string_view() == "task." + id && type_of_event(ev[3]) == "done") {
          return true;
        }
      }
    }
  }
  return false;
}

}  // namespace

std::string submit_body(const LoadSpec& spec, std::int64_t req) {
  protocol::Writer w;
  w.begin_map().kv("req", req).kv("plugin", spec.plugin).kv("handler", spec.handler);
  if (!spec.input.empty()) w.key("input").raw(spec.input);
  if (spec.priority != 0) w.kv("priority", spec.priority);
  w.end_map();
  return w.take();
}

LoadResult run_kbfleet_load(const std::string& router, const std::string& events, const LoadSpec& spec) {
  zmq::context_t ctx(1);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  tune(dealer);
  tune(sub);
  dealer.connect(router);
  sub.connect(events);
  sub.set(zmq::sockopt::subscribe, "task.");
  LoadResult failed;
  if (!sync_subscription(dealer, sub, spec)) {
    failed.first_error = "no done event within 10 s: is a worker offering " + spec.plugin + " connected?";
    return failed;
  }
  drain(sub);

  Meter meter(spec);
  std::unordered_map<std::int64_t, Clock::time_point> by_req;       // sent, not yet acknowledged
  std::unordered_map<std::string, Clock::time_point> by_task;       // acknowledged, not yet done
  std::unordered_map<std::string, Clock::time_point> early_done;    // done seen before `submitted`
  std::int64_t next_req = 1000000, in_flight = 0, lost = 0, refused = 0;
  std::string first_error;
  transport::Incoming in;
  std::vector<zmq::message_t> ev;
  auto last_sweep = Clock::now();
  std::optional<Clock::time_point> drain_until;  // after the interval: wait for what is in flight
  while (true) {
    auto now = Clock::now();
    bool sending = meter.tick(now);
    if (!sending && !drain_until) drain_until = now + std::chrono::seconds(3);
    if (!sending && (in_flight == 0 || now > *drain_until)) break;
    while (sending && in_flight < spec.window) {
      if (!transport::send_message(dealer, "", protocol::msg::kSubmit, submit_body(spec, next_req))) break;
      by_req.emplace(next_req++, now);
      meter.on_sent(now, ++in_flight);
    }
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}, {sub.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(10));
    for (int n = 0; n < 1000 && transport::recv_message(dealer, transport::SocketKind::kDealer, in); ++n) {
      auto it = by_req.find(in.req);
      if (it == by_req.end()) continue;
      if (in.type != protocol::msg::kSubmitted) {
        if (first_error.empty() && in.body) first_error = std::string(in.body->view().str_or("message", in.type));
        ++refused;
        --in_flight;
        by_req.erase(it);
        continue;
      }
      std::string id(in.body->view().str_or("task_id", ""));
      if (auto e = early_done.find(id); e != early_done.end()) {
        meter.on_done(it->second, e->second);
        early_done.erase(e);
        --in_flight;
      } else {
        by_task.emplace(std::move(id), it->second);
      }
      by_req.erase(it);
    }
    auto recv_at = Clock::now();
    for (int n = 0; n < 2000; ++n) {
      ev.clear();
      if (!zmq::recv_multipart(sub, std::back_inserter(ev), zmq::recv_flags::dontwait)) break;
      if (ev.size() != 4 || type_of_event(ev[3]) != protocol::event::kDone) continue;
      std::string id(ev[0].to_string_view().substr(5));  // "task.<id>"
      if (auto it = by_task.find(id); it != by_task.end()) {
        meter.on_done(it->second, recv_at);
        by_task.erase(it);
        --in_flight;
      } else {
        early_done.emplace(std::move(id), recv_at);
      }
    }
    if (recv_at - last_sweep > std::chrono::seconds(1)) {  // give up on tasks whose done never came
      last_sweep = recv_at;
      for (auto it = early_done.begin(); it != early_done.end();) {  // tasks not ours (--queued ones)
        it = recv_at - it->second > kLostAfter ? early_done.erase(it) : std::next(it);
      }
      const auto n = forget_lost(by_task, recv_at);
      lost += n;
      in_flight -= n;
    }
  }
  auto r = meter.result();
  r.lost = lost;
  r.refused = refused;
  r.first_error = first_error;
  r.request_bytes = static_cast<std::int64_t>(submit_body(spec, next_req).size());
  return r;
}

LoadResult run_baseline_load(const std::string& frontend, const LoadSpec& spec) {
  zmq::context_t ctx(1);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  tune(dealer);
  dealer.connect(frontend);
  Meter meter(spec);
  // The request is kbfleet's submit body, byte for byte, with a sequence number in its first 8
  // bytes (the baseline never parses it) to find the send time of each echoed reply.
  std::string body = submit_body(spec, 1000000);
  std::unordered_map<std::uint64_t, Clock::time_point> sent_at;
  std::uint64_t next = 1;
  std::int64_t in_flight = 0, lost = 0;
  std::vector<zmq::message_t> reply;
  auto last_sweep = Clock::now();
  std::optional<Clock::time_point> drain_until;  // after the interval: wait for what is in flight
  while (true) {
    auto now = Clock::now();
    bool sending = meter.tick(now);
    if (!sending && !drain_until) drain_until = now + std::chrono::seconds(3);
    if (!sending && (in_flight == 0 || now > *drain_until)) break;
    while (sending && in_flight < spec.window) {
      zmq::message_t m(body.data(), body.size());
      std::memcpy(m.data(), &next, sizeof next);
      if (!dealer.send(m, zmq::send_flags::dontwait)) break;
      sent_at.emplace(next++, now);
      meter.on_sent(now, ++in_flight);
    }
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(10));
    auto recv_at = Clock::now();
    for (int n = 0; n < 2000; ++n) {
      reply.clear();
      if (!zmq::recv_multipart(dealer, std::back_inserter(reply), zmq::recv_flags::dontwait)) break;
      std::uint64_t seq = 0;
      if (reply.size() != 1 || reply[0].size() < sizeof seq) continue;
      std::memcpy(&seq, reply[0].data(), sizeof seq);
      if (auto it = sent_at.find(seq); it != sent_at.end()) {
        meter.on_done(it->second, recv_at);
        sent_at.erase(it);
        --in_flight;
      }
    }
    if (recv_at - last_sweep > std::chrono::seconds(1)) {
      last_sweep = recv_at;
      const auto n = forget_lost(sent_at, recv_at);
      lost += n;
      in_flight -= n;
    }
  }
  auto r = meter.result();
  r.lost = lost;
  r.request_bytes = static_cast<std::int64_t>(body.size());
  return r;
}

}  // namespace kbfleet::bench
