// Client requests: submit, status, cancel, events (replay), info, workers, artifacts, fetch.
#include <optional>

#include <spdlog/spdlog.h>

#include "broker/auth/authorize.hpp"
#include "broker/broker.hpp"
#include "common/hash/sha256.hpp"

namespace kbfleet::broker {

using protocol::Writer;
namespace msg = protocol::msg;
namespace state = protocol::state;

namespace {

constexpr std::size_t kMaxInputBytes = 1 << 20;
constexpr std::size_t kMaxEnvVars = 256;
constexpr std::int64_t kMaxReplayEvents = 5000;
constexpr std::int64_t kMaxChunkBytes = 4 << 20;
constexpr std::int64_t kIdempotentAttempts = 3;

std::string join(const std::set<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out.empty() ? "(none)" : out;
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void encode_task(Writer& w, const Task& t) {
  w.begin_map();
  w.kv("task_id", t.id().view()).kv("plugin", t.request.plugin).kv("version", t.run().version.empty() ? t.request.version.view() : std::string_view(t.run().version));
  w.kv("handler", t.request.handler).kv("state", t.state.name()).kv("priority", t.request.priority);
  w.kv("attempt", t.attempt).kv("worker", t.run().worker_name);
  w.kv("submitted_ms", t.submitted_ms).kv("started_ms", t.run().started_ms).kv("finished_ms", t.run().finished_ms);
  w.kv("events", t.run().next_seq - 1).kv("max_attempts", t.max_attempts);
  if (!t.run().retry_of.empty()) w.kv("retry_of", t.run().retry_of);
  if (t.run().outcome) {
    w.key("outcome").begin_map();
    t.run().outcome->encode(w);
    w.end_map();
  }
  w.key("artifacts").begin_array();
  for (const auto& a : t.run().artifacts) {
    w.begin_map();
    a.encode(w);
    w.end_map();
  }
  w.end_array();
  w.end_map();
}

}  // namespace

Result<Task*> Broker::task_for(const transport::Incoming& in) {
  auto id = in.body->view().str("task_id");
  if (!id) return tl::unexpected(id.error());
  Task* t = tasks_.find(*id);
  if (t == nullptr) {
    return make_error(ErrorCode::kTaskNotFound,
                      "no task " + std::string(*id) + " (unknown id, or its result expired after --retention-ms or beyond --retention-max-tasks)",
                      {{"task_id", std::string(*id)}});
  }
  if (auto ok = authorize_task(*caller_, t->tenant.str(), t->id().str()); !ok) {
    metrics_.auth_denied.increment("tenant");
    spdlog::warn("request denied identity={} key={} code=FORBIDDEN reason=tenant type={} task={}", caller_->to_string(),
                 caller_->key.empty() ? "-" : caller_->key, in.type, t->id().view());
    return tl::unexpected(ok.error());
  }
  return t;
}

void Broker::on_info(transport::Incoming& in) {
  Writer w;
  w.begin_map().kv("req", in.req).kv("protocol", protocol::kProtocolVersion).kv("version", "0.1.0");
  w.kv("events_endpoint", endpoints_.events).kv("workers", static_cast<std::int64_t>(workers_.all().size()));
  w.end_map();
  reply(in.peer, msg::kInfo, w.take());
}

Status Broker::accepting() const {
  if (stopping_) {
    return make_error(ErrorCode::kShuttingDown,
                      "the broker is shutting down and accepts no new tasks; submit again once it is back "
                      "(with the same idempotency key)");
  }
  if (journal_error_) return tl::unexpected(*journal_error_);
  return {};
}

// Journals a task just created and queues it; returns its queue key. If the journal refuses it,
// the task is forgotten, the client gets the journal's error and nullopt is returned.
std::optional<std::string> Broker::admit(Task& t, const transport::Incoming& in) {
  if (auto st = journal_insert(t); !st) {
    tasks_.erase(t.id().view());
    reply_error(in.peer, in.req, *journal_error_);
    return std::nullopt;
  }
  count_queued(t, +1);
  metrics_.submitted.Increment();
  std::string key = queue_key(t.request.plugin, t.request.version);
  queue_.push(key, t.request.priority, t.key, t.tenant.str());
  return key;
}

void Broker::on_submit(transport::Incoming& in) {
  if (auto ok = accepting(); !ok) return reply_error(in.peer, in.req, ok.error());
  auto req = protocol::SubmitRequest::decode(in.body->view());
  if (!req) return reply_error(in.peer, in.req, req.error());
  auto invalid = [&](std::string field, std::string message) {
    reply_error(in.peer, in.req, Error{ErrorCode::kInvalidArgument, std::move(message), {{"field", std::move(field)}}});
  };
  if (!valid_name(req->plugin)) return invalid("plugin", "plugin id '" + req->plugin + "' is not valid ([a-z0-9._-], at most 64)");
  if (req->handler.empty() || req->handler.size() > 64) return invalid("handler", "handler name must be 1-64 characters");
  if (req->input.size() > kMaxInputBytes) return invalid("input", "input exceeds 1 MiB; pass large data as a file the handler fetches");
  if (req->env.size() > kMaxEnvVars) return invalid("env", "at most 256 environment variables");
  if (auto ok = admit_for_tenant(req->plugin); !ok) {
    auto reason = ok.error().details.count("reason") ? ok.error().details.at("reason") : "tenant";
    return deny(in.peer, in.req, ok.error(), reason);
  }
  // Idempotency keys are per tenant: another tenant's key never finds (or reveals) its task.
  if (secure() && !req->idempotency_key.empty()) req->idempotency_key = caller_->tenant + "/" + req->idempotency_key;

  if (!req->idempotency_key.empty()) {
    if (Task* existing = tasks_.find_by_idempotency_key(req->idempotency_key)) {
      Writer w;
      w.begin_map().kv("req", in.req).kv("task_id", existing->id().view()).kv("existing", true).end_map();
      return acknowledge_created(in.peer, in.req, *existing, std::string(msg::kSubmitted), w.take());
    }
  }
  const PluginLookup& offer = workers_.lookup(req->plugin, req->version, req->handler);
  // What is wrong with the request itself is refused now. A plugin@version that exists but that
  // no connected worker can run (none grants its capabilities, or no worker is connected) waits
  // for one, up to --no-capable-worker-ms (fail_tasks_without_capable_worker).
  if (offer.any_worker && !offer.offered) {
    if (offer.broken && offer.versions.empty()) {
      return reply_error(in.peer, in.req,
                         Error{ErrorCode::kManifestInvalid,
                               "plugin '" + req->plugin + "' has an invalid manifest on the workers: " +
                                   offer.broken->error_message + " (fix kbfleet.yaml and restart the workers)",
                               {{"plugin", req->plugin}}});
    }
    if (offer.ungranted.empty()) {
      std::string msg = offer.versions.empty()
                            ? "no connected worker offers plugin '" + req->plugin + "'; `kbfleet workers` lists what is offered"
                            : "plugin '" + req->plugin + "' has no version '" + req->version + "'; offered: " + join(offer.versions);
      return reply_error(in.peer, in.req, Error{ErrorCode::kPluginNotFound, msg, {{"plugin", req->plugin}}});
    }
  }
  if ((offer.offered || !offer.ungranted.empty()) && !offer.handlers.count(req->handler)) {
    return reply_error(in.peer, in.req,
                       Error{ErrorCode::kHandlerNotFound,
                             "plugin '" + req->plugin + "' has no handler '" + req->handler + "'; handlers: " + join(offer.handlers),
                             {{"plugin", req->plugin}, {"handler", req->handler}}});
  }
  if (queued_ >= options_.max_queued) {
    return reply_error(in.peer, in.req,
                       Error{ErrorCode::kQueueFull,
                             "the broker already holds " + std::to_string(queued_) + " queued tasks; retry later",
                             {{"retry_after_ms", "1000"}}});
  }

  const bool idempotent = offer.idempotent.count(req->handler) > 0;
  const bool offered = offer.offered;  // `offer` lives in the registry's cache; copy what is used below
  const std::string ungranted = offered ? std::string() : join(offer.ungranted);
  Task& t = tasks_.create(std::move(*req), protocol::now_ms());
  t.tenant = tasks_.name(caller_->tenant);
  t.max_attempts = t.request.max_attempts > 0 ? t.request.max_attempts : (idempotent ? kIdempotentAttempts : 1);
  auto admitted = admit(t, in);
  if (!admitted) return;
  const std::string key = *admitted;
  if (!offered) {
    no_capable_since_.try_emplace(key, t.queued_at);
    spdlog::debug("task waits for a capable worker task={} plugin={} missing={} limit_ms={}", t.id().view(), key, ungranted,
                  options_.no_capable_worker_ms);
  }
  spdlog::debug("task accepted task={} plugin={} handler={}", t.id().view(), t.request.plugin, t.request.handler);

  // Held until the journal commit at the end of this loop turn (Broker::commit_turn).
  Writer w;
  w.begin_map().kv("req", in.req).kv("task_id", t.id().view()).kv("existing", false).end_map();
  acknowledge_created(in.peer, in.req, t, std::string(msg::kSubmitted), w.take());
  dispatch_key(key);
}

void Broker::on_status(transport::Incoming& in) {
  auto t = task_for(in);
  if (!t) return reply_error(in.peer, in.req, t.error());
  Writer w;
  w.begin_map().kv("req", in.req).key("task");
  encode_task(w, **t);
  w.end_map();
  reply(in.peer, msg::kStatus, w.take());
}

void Broker::on_cancel(transport::Incoming& in) {
  auto found = task_for(in);
  if (!found) return reply_error(in.peer, in.req, found.error());
  Task& t = **found;
  if (t.state == state::kQueued) {
    count_queued(t, -1);  // the queue entry is discarded lazily at pop time
    emit(t, protocol::event::kCancelled, Writer().begin_map().kv("by", "client").end_map().take());
    protocol::TaskOutcome o;
    o.state = std::string(state::kCancelled);
    o.error_code = std::string(code_name(ErrorCode::kCancelled));
    o.error_message = "cancelled before it started";
    finish_task(t, std::move(o));
  } else if (t.state == state::kRunning && !t.cancel_requested) {
    t.cancel_requested = true;
    emit(t, protocol::event::kCancelled, Writer().begin_map().kv("by", "client").end_map().take());
    Writer w;
    w.begin_map().kv("task_id", t.id().view()).kv("attempt", t.attempt).end_map();
    reply(t.run().worker, msg::kCancel, w.take());
  }
  Writer w;
  w.begin_map().kv("req", in.req).kv("task_id", t.id().view()).kv("state", t.state.name()).end_map();
  reply(in.peer, msg::kCancel, w.take());
}

void Broker::on_events(transport::Incoming& in) {
  auto found = task_for(in);
  if (!found) return reply_error(in.peer, in.req, found.error());
  Task& t = **found;
  const auto v = in.body->view();
  std::int64_t from = std::max<std::int64_t>(v.i64_or("from_seq", 1), t.run().first_seq);
  std::int64_t max = std::clamp<std::int64_t>(v.i64_or("max", 1000), 1, kMaxReplayEvents);
  Writer w;
  w.begin_map().kv("req", in.req).kv("task_id", t.id().view()).kv("state", t.state.name());
  w.kv("first_seq", t.run().first_seq).kv("last_seq", t.run().next_seq - 1);
  w.key("events").begin_array();
  std::int64_t seq = from;
  for (; seq < t.run().next_seq && seq < from + max; ++seq) {
    w.raw(t.run().backlog[static_cast<std::size_t>(seq - t.run().first_seq)]);
  }
  w.end_array();
  w.kv("next_seq", seq);
  w.kv("finished", t.state.terminal() && seq >= t.run().next_seq);
  w.end_map();
  reply(in.peer, msg::kEvents, w.take());
}

void Broker::on_retry(transport::Incoming& in) {
  if (auto ok = accepting(); !ok) return reply_error(in.peer, in.req, ok.error());
  auto found = task_for(in);
  if (!found) return reply_error(in.peer, in.req, found.error());
  Task& old = **found;
  if (old.state != state::kDeadLetter) {
    return reply_error(in.peer, in.req,
                       Error{ErrorCode::kInvalidArgument,
                             "task " + old.id().str() + " is " + std::string(old.state.name()) + "; only dead-lettered tasks are retried "
                             "(submit a new task to run it again)",
                             {{"state", std::string(old.state.name())}}});
  }
  if (auto ok = admit_for_tenant(old.request.plugin.str()); !ok) {
    auto reason = ok.error().details.count("reason") ? ok.error().details.at("reason") : "tenant";
    return deny(in.peer, in.req, ok.error(), reason);
  }
  protocol::SubmitRequest request = old.request.copy();
  request.idempotency_key.clear();  // the key names the first task
  Task& t = tasks_.create(std::move(request), protocol::now_ms());
  t.max_attempts = old.max_attempts;
  t.mutable_run().retry_of = old.id().str();
  t.tenant = old.tenant;
  auto admitted = admit(t, in);
  if (!admitted) return;
  const std::string key = *admitted;
  Writer w;
  w.begin_map().kv("req", in.req).kv("task_id", t.id().view()).kv("retry_of", old.id().view()).end_map();
  acknowledge_created(in.peer, in.req, t, std::string(msg::kRetry), w.take());
  dispatch_key(key);
}

void Broker::on_workers(transport::Incoming& in) {
  Writer w;
  w.begin_map().kv("req", in.req).key("workers").begin_array();
  for (const auto& [rid, info] : workers_.all()) {
    w.begin_map();
    w.kv("worker_id", info.ready.worker_id).kv("host", info.ready.host).kv("pid", info.ready.pid);
    w.kv("slots", info.ready.slots).kv("free", info.free).kv("running", static_cast<std::int64_t>(info.running.size()));
    w.kv("draining", info.draining);
    w.kv_list("capabilities", info.ready.capabilities).kv_list("layers", info.ready.layers);
    w.key("plugins").begin_array();
    for (const auto& p : info.ready.plugins) {
      w.begin_map();
      p.encode(w);
      w.end_map();
    }
    w.end_array();
    w.end_map();
  }
  w.end_array().end_map();
  reply(in.peer, msg::kWorkers, w.take());
}

void Broker::on_artifacts(transport::Incoming& in) {
  auto t = task_for(in);
  if (!t) return reply_error(in.peer, in.req, t.error());
  Writer w;
  w.begin_map().kv("req", in.req).kv("task_id", (*t)->id().view()).key("artifacts").begin_array();
  for (const auto& a : (*t)->run().artifacts) {
    w.begin_map();
    a.encode(w);
    w.end_map();
  }
  w.end_array().end_map();
  reply(in.peer, msg::kArtifacts, w.take());
}

void Broker::on_fetch(transport::Incoming& in) {
  auto t = task_for(in);
  if (!t) return reply_error(in.peer, in.req, t.error());
  const auto v = in.body->view();
  auto name = v.str("name");
  if (!name) return reply_error(in.peer, in.req, name.error());
  const protocol::ArtifactMeta* meta = nullptr;
  for (const auto& a : (*t)->run().artifacts) {
    if (a.name == *name) meta = &a;
  }
  if (meta == nullptr) {
    return reply_error(in.peer, in.req,
                       Error{ErrorCode::kArtifactNotFound,
                             "task " + (*t)->id().str() + " has no artifact '" + std::string(*name) + "'; `kbfleet artifacts ls` lists them",
                             {{"name", std::string(*name)}}});
  }
  std::int64_t offset = v.i64_or("offset", 0);
  std::int64_t length = std::clamp<std::int64_t>(v.i64_or("length", 256 << 10), 1, kMaxChunkBytes);
  if (offset < 0 || offset > meta->size) {
    return reply_error(in.peer, in.req, Error{ErrorCode::kInvalidArgument, "offset is outside the artifact", {{"field", "offset"}}});
  }
  // Read straight into the frame ZeroMQ sends: the bytes are copied once, from the page cache.
  const auto want = static_cast<std::size_t>(std::min(length, meta->size - offset));
  zmq::message_t bytes(want);
  if (want > 0) {
    auto got = cas_.read_into(meta->sha256, offset, {static_cast<char*>(bytes.data()), want});
    if (!got) return reply_error(in.peer, in.req, got.error());
    if (*got != want) {
      return reply_error(in.peer, in.req,
                         Error{ErrorCode::kIoError, "the stored blob of '" + meta->name + "' is shorter than its recorded size", {}});
    }
  }
  metrics_.artifact_bytes_out.Increment(static_cast<double>(want));
  Writer w;
  w.begin_map().kv("req", in.req).kv("offset", offset).kv("size", meta->size).kv("sha256", meta->sha256);
  w.kv("eof", offset + static_cast<std::int64_t>(want) >= meta->size).end_map();
  std::vector<zmq::message_t> data;
  data.push_back(std::move(bytes));
  reply(in.peer, msg::kChunk, w.take(), std::move(data));
}

}  // namespace kbfleet::broker
