#include "broker/broker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/auth/authorize.hpp"
#include "common/posix/signals.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::broker {

using protocol::Writer;
namespace msg = protocol::msg;

Result<std::unique_ptr<Broker>> Broker::create(const BrokerOptions& options) {
  // Blobs are as durable as the journal that refers to them (docs/operations.md).
  auto cas = Cas::open(options.data_dir, options.durability == Durability::kNone ? Cas::Sync::kNone : Cas::Sync::kFsync);
  if (!cas) return tl::unexpected(cas.error());
  std::unique_ptr<Broker> b(new Broker(options, std::move(*cas)));
  auto writer = BlobWriter::start();
  if (!writer) return tl::unexpected(writer.error());
  b->writer_ = std::move(*writer);
  // Keys and allow-list first: recovery rebuilds per-tenant state (blob ownership) in CURVE mode.
  if (auto st = b->setup_security(); !st) return tl::unexpected(st.error());
  // Recover before binding, so no client or worker sees a broker without its tasks.
  if (options.durability != Durability::kNone) {
    auto journal = Journal::open({options.data_dir + "/journal.db", options.durability, options.journal_max_pages});
    if (!journal) return tl::unexpected(journal.error());
    b->journal_ = std::move(*journal);
    if (auto st = b->recover(); !st) return tl::unexpected(st.error());
  }

  auto bind = transport::bind_router(b->router_, options.bind);
  if (!bind) return tl::unexpected(bind.error());
  b->endpoints_.bind = *bind;

  try {
    b->xpub_.set(zmq::sockopt::xpub_verbose, 1);  // see every subscription, to count plugin topics
    b->xpub_.set(zmq::sockopt::sndhwm, 100000);
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kInternal, std::string("xpub setsockopt: ") + e.what());
  }
  auto events = transport::bind_socket(b->xpub_, options.events);
  if (!events) return tl::unexpected(events.error());
  b->endpoints_.events = *events;

  if (!options.metrics.empty()) {
    auto ep = metrics::serve(options.metrics, b->metrics_.registry());
    if (!ep) return tl::unexpected(ep.error());
    b->endpoints_.metrics = ep->address;
    b->metrics_endpoint_ = std::move(*ep);
  }
  return b;
}

Broker::Broker(BrokerOptions options, Cas cas)
    : options_(std::move(options)),
      ctx_(1),
      router_(ctx_, zmq::socket_type::router),
      xpub_(ctx_, zmq::socket_type::xpub),
      cas_(std::move(cas)),
      tasks_(static_cast<std::size_t>(options_.backlog_bytes)) {}

Broker::~Broker() = default;

void Broker::run(int stop_fd, int reload_fd) {
  spdlog::info("broker started bind={} events={} metrics={} data={} durability={} security={}", endpoints_.bind,
               endpoints_.events, endpoints_.metrics.empty() ? "off" : endpoints_.metrics, options_.data_dir,
               durability_name(options_.durability), secure() ? "curve" : "plain");
  next_heartbeat_ = Clock::now();
  transport::Incoming in;
  for (;;) {
    // The ZAP handler and SIGHUP come last, so plain mode polls exactly what it polled before.
    zmq::pollitem_t items[] = {
        {router_.handle(), 0, ZMQ_POLLIN, 0},
        {xpub_.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
        {zap_ ? zap_->socket().handle() : nullptr, zap_ ? 0 : reload_fd, ZMQ_POLLIN, 0},
        {nullptr, reload_fd, ZMQ_POLLIN, 0},
        {nullptr, -1, ZMQ_POLLIN, 0},
    };
    int n_items = zap_ ? (reload_fd >= 0 ? 5 : 4) : (reload_fd >= 0 ? 4 : 3);
    const int writes = n_items++;  // the blob writer's results (artifact uploads)
    items[writes].fd = writer_->ready_fd();
    auto next = next_heartbeat_;
    if (!retry_due_.empty()) next = std::min(next, retry_due_.top().first);
    if (reattach_deadline_) next = std::min(next, *reattach_deadline_);
    if (auto due = next_ack_due()) next = std::min(next, *due);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now());
    zmq::poll(items, n_items, std::clamp(wait, std::chrono::milliseconds(0), std::chrono::milliseconds(1000)));
    if (items[2].revents & ZMQ_POLLIN) break;
    // Answer ZAP first: peers whose handshake waits on it get their connection this turn.
    if (zap_ && (items[3].revents & ZMQ_POLLIN)) zap_->on_readable();
    const zmq::pollitem_t& hup = zap_ ? items[4] : items[3];
    if (reload_fd >= 0 && (hup.revents & ZMQ_POLLIN)) {
      posix::drain_signal_fd(reload_fd);
      (void)reload_allow_list();  // logged; the previous list stays on error
    }
    if (items[0].revents & ZMQ_POLLIN) {
      // Drain a bounded batch so timers and subscriptions still get their turn under load.
      for (int i = 0; i < 1000 && transport::recv_message(router_, transport::SocketKind::kRouter, in); ++i) {
        on_router_message(in);
      }
    }
    if (items[writes].revents & ZMQ_POLLIN) on_blob_writes();
    if (items[1].revents & ZMQ_POLLIN) {
      zmq::message_t sub;
      while (xpub_.recv(sub, zmq::recv_flags::dontwait)) {
        if (secure()) {
          on_secure_subscription(sub);
        } else {
          on_subscription(sub);
        }
      }
    }
    requeue_due_retries(Clock::now());
    expire_orphans(Clock::now());
    fail_tasks_without_capable_worker(Clock::now());
    if (Clock::now() >= next_heartbeat_) on_timers();
    if (redispatch_) {
      redispatch_ = false;
      std::vector<std::string> idle;
      for (const auto& [id, w] : workers_.all()) {
        if (w.free > 0 && !w.draining) idle.push_back(id);
      }
      for (const auto& id : idle) {
        if (WorkerInfo* w = workers_.find(id)) dispatch_worker(*w);
      }
    }
    // Group commit: everything this turn changed becomes durable in one transaction, and only
    // then are the replies, dispatches and events it caused sent.
    commit_turn();
  }
  shutdown();
}

void Broker::shutdown() {
  stopping_ = true;
  metrics_.draining.Set(1);
  spdlog::info("broker draining: refusing new submissions queued={} running={}", queued_, running_);
  // Answer what already arrived (submissions get SHUTTING_DOWN), so clients retry elsewhere or
  // later instead of waiting for a timeout.
  transport::Incoming in;
  for (int i = 0; i < 10000 && transport::recv_message(router_, transport::SocketKind::kRouter, in); ++i) {
    on_router_message(in);
  }
  for (auto& [peer, held] : held_acks_) held.due = Clock::time_point::min();  // everything goes now
  commit_turn();
  std::string journal = "none";
  if (journal_) {
    auto st = journal_->checkpoint();
    journal = st ? "flushed" : "error";
    if (!st) spdlog::error("journal checkpoint at shutdown failed error=\"{}\"", st.error().message);
  }
  // Give the last replies a moment to leave (the ROUTER was bound with linger 0).
  router_.set(zmq::sockopt::linger, 500);
  spdlog::info("broker stopped journal={} queued={} running={}", journal, queued_, running_);
}

void Broker::on_router_message(transport::Incoming& in) {
  if (in.error) {
    metrics_.malformed.increment(std::string(code_name(in.error->code)));
    spdlog::warn("malformed message refused peer_bytes={} error=\"{}\"", in.peer.size(), in.error->message);
    if (!in.peer.empty()) reply_error(in.peer, in.req, *in.error);
    return;
  }
  if (!authenticate(in)) return;
  workers_.touch(in.peer, Clock::now());
  const std::string& type = in.type;
  if ((type == msg::kTaskEvents || type == msg::kResult || type == msg::kResults) && workers_.find(in.peer) == nullptr) {
    // A worker this broker does not know (it restarted) but that keeps it busy: a busy worker
    // sends no heartbeat, so ask it to re-announce now, to re-attach its tasks and get new ones.
    ask_to_reconnect(in.peer);
  }
  // Clients
  if (type == msg::kSubmit) return on_submit(in);
  if (type == msg::kStatus) return on_status(in);
  if (type == msg::kEvents) return on_events(in);
  if (type == msg::kCancel) return on_cancel(in);
  if (type == msg::kInfo) return on_info(in);
  if (type == msg::kWorkers) return on_workers(in);
  if (type == msg::kArtifacts) return on_artifacts(in);
  if (type == msg::kFetch) return on_fetch(in);
  // Workers
  if (type == msg::kReady) return on_ready(in);
  if (type == msg::kHeartbeat) {
    if (workers_.find(in.peer) == nullptr) ask_to_reconnect(in.peer);
    return;
  }
  if (type == msg::kTaskEvents) return on_task_events(in);
  if (type == msg::kRetry) return on_retry(in);
  if (type == msg::kDrain) return on_drain(in);
  if (type == msg::kBye) return worker_lost(in.peer, "it shut down");
  if (type == msg::kResult) return on_result(in);
  if (type == msg::kResults) return on_results(in);
  if (type == msg::kUploadBegin) return on_upload_begin(in);
  if (type == msg::kUploadChunk) return on_upload_chunk(in);
  if (type == msg::kUploadEnd) return on_upload_end(in);
  metrics_.malformed.increment("UNKNOWN_TYPE");
  reply_error(in.peer, in.req,
              Error{ErrorCode::kProtocolError, "unknown message type '" + type + "' (see docs/protocol.md)", {}});
}

void Broker::ask_to_reconnect(const std::string& peer) {
  // Once per worker until its `ready`: a second `ready` crossing tasks dispatched after the
  // first would make the broker think the worker lost them.
  if (!reconnect_asked_.emplace(peer, Clock::now()).second) return;
  reply(peer, msg::kReconnect, Writer().begin_map().end_map().take());
}

Clock::time_point Broker::deadline_for_reconnect(Clock::time_point now) const {
  return now - std::chrono::milliseconds(options_.heartbeat_ms * options_.liveness);
}

void Broker::on_subscription(const zmq::message_t& msg) {
  // XPUB delivers subscriptions as one byte (1 = subscribe, 0 = unsubscribe) + the prefix.
  if (msg.size() < 1) return;
  const auto* p = static_cast<const char*>(msg.data());
  std::string_view topic(p + 1, msg.size() - 1);
  if (topic.rfind("plugin.", 0) != 0) return;
  plugin_subscribers_ += (p[0] == 1) ? 1 : -1;
  plugin_subscribers_ = std::max<std::int64_t>(plugin_subscribers_, 0);
}

void Broker::on_timers() {
  auto now = Clock::now();
  next_heartbeat_ = now + std::chrono::milliseconds(options_.heartbeat_ms);
  // A reconnect that got no `ready` within the liveness window may be asked again.
  std::erase_if(reconnect_asked_, [&](const auto& kv) { return kv.second < deadline_for_reconnect(now); });
  auto heartbeat = Writer().begin_map().end_map().take();
  for (const auto& [id, w] : workers_.all()) transport::send_message(router_, id, msg::kHeartbeat, heartbeat);
  auto deadline = now - std::chrono::milliseconds(options_.heartbeat_ms * options_.liveness);
  for (const auto& id : workers_.silent_since(deadline)) worker_lost(id, "missed heartbeats");
  compact_journal(expire_finished());
  if (journal_error_ && dirty_.empty()) {
    // Half-open: accept submissions again for a turn; if the journal still fails, their
    // submitters get IO_ERROR (nothing was acknowledged) and the error is set again.
    journal_error_.reset();
    journal_probing_ = true;
  }
  update_gauges();
}

void Broker::reply(const std::string& peer, std::string_view type, std::string body,
                   std::vector<zmq::message_t> data) {
  Outgoing out;
  out.peer = peer;
  out.type = std::string(type);
  out.body = std::move(body);
  out.data = std::move(data);
  send_or_hold(std::move(out));
}

void Broker::send_or_hold(Outgoing&& out) { outbox_.push_back(std::move(out)); }

void Broker::coalesce_outbox() {
  // (type, peer) -> index of the message that carries the batch. Moving a later assignment or
  // acknowledgement forward to the first one's place never reorders what a worker depends on:
  // a cancel for a task still follows its assignment.
  // Held acknowledgements whose hold ended go this turn (inside an assignment, if one goes).
  const auto now = Clock::now();
  for (auto it = held_acks_.begin(); it != held_acks_.end();) {
    if (it->second.due > now) {
      ++it;
      continue;
    }
    for (auto& body : it->second.bodies) {
      Outgoing out;
      out.peer = it->first;
      out.type = std::string(msg::kResultAck);
      out.body = std::move(body);
      out.due = true;
      outbox_.push_back(std::move(out));
    }
    it = held_acks_.erase(it);
  }
  for (auto& heads : batch_heads_) heads.clear();
  for (std::size_t i = 0; i < outbox_.size(); ++i) {
    Outgoing& o = outbox_[i];
    if (o.publish || (o.type != msg::kTask && o.type != msg::kResultAck)) continue;
    // Keys view the peers of outbox_, which does not change while this runs.
    auto& heads = batch_heads_[o.type == msg::kTask ? 0 : 1];
    auto [it, fresh] = heads.try_emplace(std::string_view(o.peer), i);
    if (fresh) continue;
    Outgoing& head = outbox_[it->second];
    if (head.batch.size() + 1 >= protocol::kMaxItemsPerBatch) {
      it->second = i;  // full: this message starts the next batch
      continue;
    }
    head.batch.push_back(std::move(o.body));
    head.due = head.due || o.due;
    o.consumed = true;
  }
  hold_acks();
}

void Broker::hold_acks() {
  const auto now = Clock::now();
  auto fold = [](std::vector<std::string>& into, Outgoing& o) {
    into.push_back(std::move(o.body));
    for (auto& b : o.batch) into.push_back(std::move(b));
    o.consumed = true;
  };
  for (auto& o : outbox_) {
    if (o.consumed || o.publish || o.type != msg::kResultAck) continue;
    const WorkerInfo* w = workers_.find(o.peer);
    if (w == nullptr || std::find(w->ready.features.begin(), w->ready.features.end(), protocol::kAcksInTasks) ==
                             w->ready.features.end()) {
      continue;  // a worker that reads acknowledgements only as `result_ack`
    }
    const std::size_t items = 1 + o.batch.size();
    if (auto head = batch_heads_[0].find(std::string_view(o.peer)); head != batch_heads_[0].end()) {
      Outgoing& assignments = outbox_[head->second];
      if (assignments.acks.size() + items <= protocol::kMaxItemsPerBatch) fold(assignments.acks, o);
      continue;
    }
    if (o.due) continue;  // held once already: goes now
    HeldAcks& held = held_acks_[o.peer];
    if (held.bodies.empty()) held.due = now + std::chrono::milliseconds(protocol::kAckHoldMs);
    if (held.bodies.size() + items <= protocol::kMaxItemsPerBatch) fold(held.bodies, o);
  }
  // This turn's assignments carry what earlier turns held for their worker.
  for (const auto& [peer, index] : batch_heads_[0]) {
    auto held = held_acks_.find(std::string(peer));
    if (held == held_acks_.end()) continue;
    Outgoing& assignments = outbox_[index];
    if (assignments.acks.size() + held->second.bodies.size() > protocol::kMaxItemsPerBatch) continue;
    for (auto& b : held->second.bodies) assignments.acks.push_back(std::move(b));
    held_acks_.erase(held);
  }
}

std::optional<Clock::time_point> Broker::next_ack_due() const {
  std::optional<Clock::time_point> next;
  for (const auto& [peer, held] : held_acks_) {
    if (!next || held.due < *next) next = held.due;
  }
  return next;
}

void Broker::send_now(Outgoing& out) {
  if (out.consumed) return;  // sent inside another message's batch
  if (!out.batch.empty() || !out.acks.empty()) {
    // `task` -> `tasks: [assignment...]` (with `acks: [...]` when it carries acknowledgements);
    // `result_ack` -> `acks: [{task_id, attempt}...]`.
    const bool tasks = out.type == msg::kTask;
    Writer w;
    w.begin_map().key(tasks ? "tasks" : "acks").begin_array().raw(out.body);
    for (const auto& b : out.batch) w.raw(b);
    w.end_array();
    if (!out.acks.empty()) {
      w.key("acks").begin_array();
      for (const auto& a : out.acks) w.raw(a);
      w.end_array();
    }
    w.end_map();
    out.body = w.take();
    if (tasks) out.type = std::string(msg::kTasks);
  }
  if (out.publish) {
    try {
      xpub_.send(zmq::buffer(out.peer), zmq::send_flags::sndmore);
      xpub_.send(zmq::buffer(protocol::kProtocolTag), zmq::send_flags::sndmore);
      xpub_.send(zmq::str_buffer("event"), zmq::send_flags::sndmore);
      xpub_.send(out.event, zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::warn("event publish failed topic={} error=\"{}\"", out.peer, e.what());
    }
    return;
  }
  if (!transport::send_message(router_, out.peer, out.type, out.body, std::move(out.data))) {
    spdlog::debug("reply dropped type={} (peer gone or queue full)", out.type);
  }
}

void Broker::reply_error(const std::string& peer, std::int64_t req, const Error& e) {
  metrics_.rejected.increment(std::string(code_name(e.code)));
  Writer w;
  w.begin_map();
  protocol::encode_error(w, req, e);
  w.end_map();
  reply(peer, msg::kError, w.take());
}

void Broker::emit(Task& t, std::string_view type, std::string data_msgpack) {
  zmq::message_t& body = tasks_.append_event(t, type, data_msgpack, protocol::now_ms());
  mark_dirty(t);  // every transition emits an event: the task's row is rewritten at commit
  auto send_on = [&](std::string topic) {
    Outgoing out;
    out.publish = true;
    out.peer = std::move(topic);
    out.event.copy(body);
    out.task_id = rollback_id(t);
    send_or_hold(std::move(out));
  };
  send_on(protocol::task_topic(t.id().view()));
  if (secure()) send_on(tenant_topic(t.tenant));  // a tenant's subscribers see all of its tasks
  if (plugin_subscribers_ > 0) send_on(protocol::plugin_topic(t.request.plugin));
  metrics_.events_published.Increment();
}

std::size_t Broker::expire_finished() {
  return tasks_.expire(protocol::now_ms(), options_.retention_ms, static_cast<std::size_t>(options_.retention_max_tasks));
}

void Broker::update_gauges() {
  metrics_.queue_depth.Set(static_cast<double>(queued_));
  metrics_.running.Set(static_cast<double>(running_));
  metrics_.workers.Set(static_cast<double>(workers_.all().size()));
  metrics_.slots_total.Set(static_cast<double>(workers_.total_slots()));
  metrics_.slots_free.Set(static_cast<double>(workers_.free_slots()));
}

}  // namespace kbfleet::broker
