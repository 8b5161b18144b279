// Worker messages: ready, task events, results and artifact uploads. A worker may only report
// on tasks the broker dispatched to it, for the attempt it was given.
#include <spdlog/spdlog.h>

#include "broker/broker.hpp"
#include "common/hash/sha256.hpp"

namespace kbfleet::broker {

using protocol::Writer;
namespace msg = protocol::msg;
namespace state = protocol::state;

namespace {
constexpr std::size_t kMaxUploadsPerWorker = 16;
// 1 MiB chunks, 8 in flight: a chunk costs a message, an ack and a loop turn on each side, and a
// window of 8 keeps the link busy while the writer thread writes and hashes (256 KiB x 4 spent
// most of the time waiting for acks). At most 8 MiB of one upload are in flight, and the writer
// enforces it (a chunk beyond the window is refused); docs/performance.md.
constexpr std::int64_t kUploadChunkBytes = 1 << 20;
constexpr std::int64_t kUploadWindow = 8;
}  // namespace

Result<Task*> Broker::running_task_of(const std::string& worker, std::string_view task_id, std::int64_t attempt) {
  Task* t = tasks_.find(task_id);
  if (t == nullptr || t->state != state::kRunning || t->run().worker != worker || t->attempt != attempt) {
    return make_error(ErrorCode::kTaskNotFound,
                      "task " + std::string(task_id) + " attempt " + std::to_string(attempt) +
                          " is not running on this worker (stale or unknown)",
                      {{"task_id", std::string(task_id)}});
  }
  return t;
}

void Broker::on_ready(transport::Incoming& in) {
  auto ready = protocol::WorkerReady::decode(in.body->view());
  if (!ready) return reply_error(in.peer, in.req, ready.error());
  const WorkerInfo* before = workers_.find(in.peer);
  const bool known = before != nullptr;
  // The same process announcing again (it got `reconnect` or heard nothing for a while), not a
  // restarted worker: tasks it does not list may have been dispatched after it built this
  // `ready`, or finished with their result on the way. They are not lost.
  const bool same_process = known && before->ready.pid == ready->pid && before->ready.host == ready->host;
  reconnect_asked_.erase(in.peer);
  std::string name = ready->worker_id;
  auto slots = ready->slots;
  auto plugins = ready->plugins.size();
  auto still_running = ready->running;
  auto previous = workers_.upsert(in.peer, std::move(*ready), Clock::now());
  WorkerInfo& w = *workers_.find(in.peer);
  for (const auto& key : w.keys) no_capable_since_.erase(key);  // its tasks stop waiting for a worker
  // Tasks we believe run there and the worker still runs keep their slot; tasks it no longer
  // knows were lost with its previous incarnation.
  std::size_t reattached = 0;
  // The ids it lists, as keys (a malformed one names no task of ours: it is foreign).
  TaskKeySet listed;
  for (const auto& id : still_running) {
    const auto key = parse_task_key(id);
    if (key) listed.insert(*key);
    if (key && previous.count(*key)) continue;
    Task* t = key ? tasks_.find(*key) : nullptr;
    if (t != nullptr && t->orphaned && t->state == state::kRunning && t->run().worker == in.peer) {
      // Recovered from the journal as running on this worker: it re-attaches its task.
      t->orphaned = false;
      workers_.assign(w, *key);
      ++reattached;
      if (t->cancel_requested) {
        reply(in.peer, msg::kCancel, Writer().begin_map().kv("task_id", t->id().view()).kv("attempt", t->attempt).end_map().take());
      }
      continue;
    }
    // A task this broker does not know (it restarted without a journal, or the task was already
    // given up): the slot is busy until its result.
    w.foreign.insert(id);
    --w.free;
  }
  for (const auto& id : previous) {
    if (same_process || listed.count(id) > 0) {
      workers_.assign(w, id);
    } else if (Task* t = tasks_.find(id); t != nullptr && t->state == state::kRunning) {
      lose_task(*t, name, "it restarted");
    }
  }
  spdlog::info("worker {} worker={} slots={} plugins={} reattached={}", known ? "re-announced" : "joined", name, slots,
               plugins, reattached);
  update_gauges();
  dispatch_worker(w);
}

void Broker::on_drain(transport::Incoming& in) {
  if (WorkerInfo* w = workers_.find(in.peer)) {
    w->draining = true;
    spdlog::info("worker draining worker={} running={}", w->ready.worker_id, w->running.size());
  }
}

void Broker::on_task_events(transport::Incoming& in) {
  const auto v = in.body->view();
  auto task_id = v.str("task_id");
  if (!task_id) return reply_error(in.peer, in.req, task_id.error());
  auto t = running_task_of(in.peer, *task_id, v.i64_or("attempt", 1));
  if (!t) {
    metrics_.malformed.increment("STALE_EVENTS");
    return;  // late events of a finished or reassigned attempt are dropped (counted)
  }
  auto events = v.array_or_empty("events");
  if (!events || events->size() > protocol::kMaxEventsPerBatch) {
    metrics_.malformed.increment("PROTOCOL_ERROR");
    return;
  }
  for (const auto* e : *events) {
    if (e->type != msgpack::type::MAP) continue;
    protocol::MapView ev(e);
    auto type = ev.str_or("type", "");
    // Workers may send only what a handler produces; lifecycle events are the broker's.
    if (type != protocol::event::kOutput && type != protocol::event::kProgress) {
      metrics_.malformed.increment("EVENT_TYPE");
      continue;
    }
    emit(**t, type, ev.raw("data"));
  }
}

void Broker::on_result(transport::Incoming& in) { handle_result(in.peer, in.body->view()); }

void Broker::on_results(transport::Incoming& in) {
  auto results = in.body->view().array_or_empty("results");
  if (!results || results->size() > protocol::kMaxItemsPerBatch) {
    metrics_.malformed.increment("PROTOCOL_ERROR");
    return reply_error(in.peer, 0,
                       Error{ErrorCode::kProtocolError,
                             "`results` must be an array of at most " + std::to_string(protocol::kMaxItemsPerBatch) +
                                 " results (docs/protocol.md)",
                             {}});
  }
  for (const auto* r : *results) {
    if (r->type != msgpack::type::MAP) {
      metrics_.malformed.increment("PROTOCOL_ERROR");
      continue;
    }
    handle_result(in.peer, protocol::MapView(r));
  }
}

void Broker::handle_result(const std::string& peer, const protocol::MapView& v) {
  auto task_id = v.str("task_id");
  if (!task_id) return reply_error(peer, 0, task_id.error());
  std::int64_t attempt = v.i64_or("attempt", 1);
  // Acknowledge even stale results so the worker stops re-sending them. A turn's
  // acknowledgements to one worker leave as one message (coalesce_outbox).
  Writer ack;
  ack.begin_map().kv("task_id", *task_id).kv("attempt", attempt).end_map();
  reply(peer, msg::kResultAck, ack.take());

  auto t = running_task_of(peer, *task_id, attempt);
  if (!t) {
    spdlog::warn("stale result ignored task={} attempt={}", *task_id, attempt);
    metrics_.malformed.increment("STALE_RESULT");  // counted like stale events (docs/protocol.md)
    WorkerInfo* w = workers_.find(peer);
    if (w != nullptr && w->foreign.erase(std::string(*task_id)) > 0) {
      ++w->free;  // the slot held by a task from before a broker restart is free again
      dispatch_worker(*w);
    }
    return;
  }
  auto outcome_view = v.map_or_none("outcome");
  if (!outcome_view || !*outcome_view) {
    return fail_task(**t, state::kFailed, Error{ErrorCode::kProtocolError, "the worker sent a result without an outcome", {}});
  }
  auto outcome = protocol::TaskOutcome::decode(**outcome_view);
  if (!outcome) return fail_task(**t, state::kFailed, outcome.error());
  outcome->artifacts = (*t)->run().artifacts;  // what the broker verified, not what the worker claims
  WorkerInfo* w = workers_.find(peer);
  finish_task(**t, std::move(*outcome));
  if (w != nullptr) dispatch_worker(*w);
}

void Broker::on_upload_begin(transport::Incoming& in) {
  const auto v = in.body->view();
  auto task_id = v.str("task_id");
  if (!task_id) return reply_error(in.peer, in.req, task_id.error());
  auto t = running_task_of(in.peer, *task_id, v.i64_or("attempt", 1));
  if (!t) return reply_error(in.peer, in.req, t.error());
  auto meta = protocol::ArtifactMeta::decode(v);
  if (!meta) return reply_error(in.peer, in.req, meta.error());
  // An empty sha256: the worker hashes while it sends and declares the hash in upload_end.
  if (!meta->sha256.empty() && !hash::is_sha256_hex(meta->sha256)) {
    return reply_error(in.peer, in.req,
                       Error{ErrorCode::kInvalidArgument, "sha256 must be 64 lowercase hex characters or empty", {}});
  }
  std::size_t mine = 0;
  for (const auto& [id, u] : uploads_) mine += (u.worker == in.peer);
  if (mine >= kMaxUploadsPerWorker) {
    return reply_error(in.peer, in.req, Error{ErrorCode::kQuotaExceeded, "too many concurrent uploads from this worker", {}});
  }
  Writer w;
  // Dedupe: the blob is already stored and verified. In CURVE mode only within the task's
  // tenant: another tenant's task gets the blob only by uploading it (the CAS verifies the
  // bytes against the hash), so knowing a hash never links a tenant to a blob it never had.
  const bool owned = !secure() || tenant_blobs_.count(blob_owner_key((*t)->tenant.str(), meta->sha256)) > 0;
  if (owned && !meta->sha256.empty() && cas_.contains(meta->sha256)) {
    record_artifact(**t, *meta);
    w.begin_map().kv("req", in.req).kv("upload_id", "").kv("have", true).end_map();
    return reply(in.peer, msg::kUploadReady, w.take());
  }
  auto blob = cas_.begin(meta->sha256, meta->size);
  if (!blob) return reply_error(in.peer, in.req, blob.error());
  auto handle = writer_->adopt(std::move(*blob), {kUploadChunkBytes, kUploadWindow});
  std::string id = std::to_string(handle.id());
  uploads_[id] = Upload{(*t)->id().str(), in.peer, *meta, std::move(handle)};
  w.begin_map().kv("req", in.req).kv("upload_id", id).kv("have", false);
  w.kv("chunk_bytes", kUploadChunkBytes).kv("window", kUploadWindow).end_map();
  reply(in.peer, msg::kUploadReady, w.take());
}

void Broker::on_upload_chunk(transport::Incoming& in) {
  const auto v = in.body->view();
  std::string id(v.str_or("upload_id", ""));
  auto it = uploads_.find(id);
  if (it == uploads_.end() || it->second.worker != in.peer) {
    return reply_error(in.peer, in.req, Error{ErrorCode::kArtifactUploadFailed, "unknown upload " + id, {{"upload_id", id}}});
  }
  // The message itself goes to the writer thread (no copy); it is acknowledged when written.
  zmq::message_t bytes;
  if (!in.data.empty()) bytes.move(in.data[0]);
  auto st = it->second.blob.append(v.i64_or("offset", -1), std::move(bytes));
  if (!st) return refuse_upload(it, st.error());
}

void Broker::on_upload_end(transport::Incoming& in) {
  const auto v = in.body->view();
  std::string id(v.str_or("upload_id", ""));
  auto it = uploads_.find(id);
  if (it == uploads_.end() || it->second.worker != in.peer || it->second.ending) {
    return reply_error(in.peer, in.req, Error{ErrorCode::kArtifactUploadFailed, "unknown upload " + id, {{"upload_id", id}}});
  }
  Upload& up = it->second;
  up.ending = true;
  const std::string_view declared = v.str_or("sha256", "");
  if (up.meta.sha256.empty()) up.meta.sha256 = std::string(declared);  // recorded only if the commit verifies it
  up.blob.commit(std::string(declared));  // answered by on_blob_writes
}

void Broker::on_blob_writes() {
  for (auto& done : writer_->take()) {
    auto it = uploads_.find(std::to_string(done.upload));
    if (it == uploads_.end()) continue;  // refused or abandoned meanwhile
    if (done.op == BlobWriter::Op::kCommit) {
      on_upload_committed(it, done.status);
    } else if (!done.status) {
      refuse_upload(it, done.status.error());
    } else {
      Writer w;
      w.begin_map().kv("upload_id", it->first).kv("received", done.received).end_map();
      reply(it->second.worker, msg::kUploadAck, w.take());
    }
  }
}

void Broker::refuse_upload(std::map<std::string, Upload>::iterator it, const Error& e) {
  spdlog::warn("artifact refused task={} name={} error=\"{}\"", it->second.task_id, it->second.meta.name, e.message);
  Writer w;
  w.begin_map().kv("upload_id", it->first).kv("ok", false);
  w.key("error").begin_map().kv("code", code_name(e.code)).kv("message", e.message).end_map();
  w.end_map();
  reply(it->second.worker, msg::kUploadDone, w.take());
  uploads_.erase(it);  // abandons the blob: its temp file is removed
}

void Broker::on_upload_committed(std::map<std::string, Upload>::iterator it, const Status& st) {
  if (!st) return refuse_upload(it, st.error());
  Upload up = std::move(it->second);
  Writer w;
  w.begin_map().kv("upload_id", it->first).kv("ok", true).end_map();
  reply(up.worker, msg::kUploadDone, w.take());
  uploads_.erase(it);
  metrics_.artifact_bytes_in.Increment(static_cast<double>(up.meta.size));
  Task* t = tasks_.find(up.task_id);
  if (t == nullptr || t->state != state::kRunning) return;
  record_artifact(*t, up.meta);
}

std::string Broker::blob_owner_key(const std::string& tenant, const std::string& sha256) { return tenant + "/" + sha256; }

void Broker::record_artifact(Task& t, const protocol::ArtifactMeta& meta) {
  t.mutable_run().artifacts.push_back(meta);
  if (secure()) tenant_blobs_.insert(blob_owner_key(t.tenant.str(), meta.sha256));
  Writer art;
  art.begin_map();
  meta.encode(art);
  art.end_map();
  emit(t, protocol::event::kArtifact, art.take());
}

}  // namespace kbfleet::broker
