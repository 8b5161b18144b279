#include "worker/worker.hpp"

#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>

#include <spdlog/spdlog.h>

#include "worker/sandbox/workspace_fs.hpp"
#include "worker/task/attempt.hpp"
#include "worker/task/builtin_noop.hpp"

namespace kbfleet::worker {

using protocol::Writer;
namespace msg = protocol::msg;
namespace state = protocol::state;

namespace {

constexpr auto kResultResend = std::chrono::seconds(2);
// Unacknowledged sends to a broker that is demonstrably alive before a result is replaced by a
// minimal failure, and again before that is given up.
constexpr int kMaxUnreadSends = 3;
constexpr auto kUploadStall = std::chrono::seconds(30);

bool valid_task_id(std::string_view id) {
  return id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string body_of(const auto& value) {
  Writer w;
  w.begin_map();
  value.encode(w);
  w.end_map();
  return w.take();
}

// Removes workspaces left by a previous run of this worker (crash or kill -9), and spare
// workspace directories (workspace_fs.hpp).
void clean_work_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    auto name = entry.path().filename().string();
    if ((name.size() > 33 && valid_task_id(name.substr(0, 32)) && name[32] == '-') || is_spare_workspace_name(name)) {
      unmount_workspace(entry.path());
      std::filesystem::remove_all(entry.path(), ec);
    }
  }
}

}  // namespace

Result<std::unique_ptr<Worker>> Worker::create(WorkerOptions options) {
  auto plugins = manifest::Registry::scan(options.plugins_dir);
  if (!plugins) return tl::unexpected(plugins.error());
  std::error_code ec;
  std::filesystem::create_directories(options.work_dir, ec);
  if (ec) {
    return make_error(ErrorCode::kIoError, "cannot create work dir " + options.work_dir.string() + ": " + ec.message());
  }
  options.work_dir = std::filesystem::canonical(options.work_dir, ec);
  clean_work_dir(options.work_dir);
  // A sandboxed task's private /tmp and /dev/shm would cover a workspace bound at its host path
  // beneath them, and Landlock's rule on them would then open the whole workspace for writing.
  if (options.policy.layers.namespaces) {
    for (const char* shadowed : {"/tmp", "/dev/shm"}) {
      auto rel = options.work_dir.lexically_relative(shadowed);
      if (!rel.empty() && *rel.begin() != "..") {
        return make_error(ErrorCode::kInvalidArgument,
                          "--work " + options.work_dir.string() + " is under " + shadowed +
                              ", which every sandboxed task gets a private copy of; use a directory elsewhere, e.g. "
                              "/var/lib/kbfleet/work");
      }
    }
  }
  // Task roots are mounted on this (empty) directory, each in its task's own mount namespace.
  options.policy.sandbox_root = options.work_dir / ".sandbox-root";
  std::filesystem::create_directories(options.policy.sandbox_root, ec);
  if (ec) {
    return make_error(ErrorCode::kIoError, "cannot create " + options.policy.sandbox_root.string() + ": " + ec.message());
  }

  if (options.builtin_noop == BuiltinNoop::kOn) {
    for (const auto& e : plugins->entries()) {
      if (e.id == kNoopPlugin) {
        return make_error(ErrorCode::kInvalidArgument, "plugin " + e.root.string() + " uses the id " +
                                                           std::string(kNoopPlugin) +
                                                           ", which --builtin-noop reserves; rename it or drop the flag");
      }
    }
  }
  std::unique_ptr<Worker> w(new Worker(std::move(options)));
  w->plugins_ = std::move(*plugins);
  if (auto st = transport::set_curve_client(w->dealer_, w->options_.curve); !st) return tl::unexpected(st.error());
  if (auto c = transport::connect_dealer(w->dealer_, w->options_.broker, w->options_.worker_id); !c) {
    return tl::unexpected(c.error());
  }
  if (!w->options_.metrics.empty()) {
    auto ep = metrics::serve(w->options_.metrics, w->metrics_.registry());
    if (!ep) return tl::unexpected(ep.error());
    w->metrics_endpoint_ = std::move(*ep);
  }
  w->metrics_.slots.Set(static_cast<double>(w->options_.slots));
  for (const auto& e : w->plugins_.entries()) {
    if (e.error) {
      spdlog::warn("plugin invalid plugin={} error=\"{}\"", e.id, e.error->message);
    } else {
      spdlog::info("plugin loaded plugin={} version={} root={}", e.id, e.version, e.root.string());
    }
  }
  return w;
}

Worker::Worker(WorkerOptions options)
    : options_(std::move(options)), ctx_(1), dealer_(ctx_, zmq::socket_type::dealer) {}

Worker::~Worker() {
  runs_.clear();  // kills any handler still running
  clean_work_dir(options_.work_dir);
}

void Worker::send(std::string_view type, std::string body, std::vector<zmq::message_t> data) {
  if (transport::send_message(dealer_, "", type, body, std::move(data))) {
    last_sent_ = Clock::now();
  } else {
    spdlog::debug("send to broker queued nothing type={} (high-water mark)", type);
  }
}

void Worker::announce() {
  protocol::WorkerReady r;
  r.worker_id = options_.worker_id;
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  r.host = host;
  r.pid = ::getpid();
  r.slots = options_.slots;
  r.capabilities = options_.policy.granted;
  if (options_.policy.layers.networks) r.capabilities.emplace_back(protocol::kNetAllowCapability);
  r.layers = options_.policy.layers.active();
  for (const auto& e : plugins_.entries()) {
    protocol::PluginOffer o;
    o.id = e.id;
    o.version = e.version;
    if (e.manifest) {
      for (const auto& [name, h] : e.manifest->handlers) {
        o.handlers.push_back(name);
        if (h.idempotent) o.idempotent.push_back(name);
      }
      o.capabilities = e.manifest->capabilities;
      // Routed only to workers that enforce allow-lists (see kNetAllowCapability).
      if (!e.manifest->net.none && e.manifest->sandbox != manifest::SandboxMode::kNone) {
        o.capabilities.emplace_back(protocol::kNetAllowCapability);
      }
    } else if (e.error) {
      o.error_code = std::string(code_name(e.error->code));
      o.error_message = e.error->message;
    }
    r.plugins.push_back(std::move(o));
  }
  if (options_.builtin_noop == BuiltinNoop::kOn) r.plugins.push_back(noop_offer());
  for (const auto& [id, run] : runs_) {
    if (run->phase != Phase::kReporting) r.running.push_back(id);
  }
  r.features.emplace_back(protocol::kAcksInTasks);
  send(msg::kReady, body_of(r));
}

void Worker::run(int stop_fd) {
  spdlog::info("worker started id={} broker={} slots={} plugins={} metrics={}", options_.worker_id, options_.broker,
               options_.slots, plugins_.entries().size(), metrics_endpoint_.address.empty() ? "off" : metrics_endpoint_.address);
  announce();
  last_heard_ = Clock::now();
  transport::Incoming in;
  std::vector<zmq::pollitem_t> items;
  std::vector<std::pair<TaskRun*, int>> owners;
  std::int64_t next_deadline_ms = 100;
  std::optional<Clock::time_point> drain_until;
  for (;;) {
    if (drain_until && (runs_.empty() || Clock::now() >= *drain_until)) break;
    items.assign({{dealer_.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, stop_fd, ZMQ_POLLIN, 0}});
    owners.clear();
    for (auto& [id, run] : runs_) {
      if (run->phase != Phase::kRunning || !run->process) continue;
      for (int fd : run->process->poll_fds()) {
        items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
        owners.emplace_back(run.get(), fd);
      }
    }
    auto timeout = std::clamp<std::int64_t>(next_deadline_ms, 0, options_.heartbeat_ms);
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout));
    if (items[1].revents & ZMQ_POLLIN) {
      signalfd_siginfo info;
      (void)::read(stop_fd, &info, sizeof info);
      if (drain_until) break;  // a second signal: stop now
      drain_until = Clock::now() + std::chrono::milliseconds(options_.drain_ms);
      spdlog::info("worker draining running={} drain_ms={}", busy_slots(), options_.drain_ms);
      send(msg::kDrain, Writer().begin_map().end_map().take());
    }
    for (std::size_t i = 2; i < items.size(); ++i) {
      if (items[i].revents != 0) owners[i - 2].first->process->on_ready(owners[i - 2].second, *owners[i - 2].first);
    }
    if (items[0].revents & ZMQ_POLLIN) {
      for (int n = 0; n < 1000 && transport::recv_message(dealer_, transport::SocketKind::kDealer, in); ++n) {
        on_broker_message(in);
      }
    }
    auto now = Clock::now();
    on_tick(now);
    flush_events();
    flush_results();  // after the turn's events: `done` stays the last event of a task
    // Next wake-up: the earliest handler deadline, else a short tick for uploads and resends.
    next_deadline_ms = 100;
    for (auto& [id, run] : runs_) {
      if (run->phase == Phase::kRunning && run->process) {
        auto d = run->process->on_tick(*run, now);
        if (d >= 0) next_deadline_ms = std::min(next_deadline_ms, d);
      }
    }
  }
  spdlog::info("worker stopping unfinished={}", runs_.size());
  runs_.clear();  // kills what is still running; the broker retries those tasks after `bye`
  // Give the goodbye a moment to leave: linger 0 would drop it with the socket.
  dealer_.set(zmq::sockopt::linger, 1000);
  flush_results();
  send(msg::kBye, Writer().begin_map().end_map().take());
}

void Worker::on_broker_message(transport::Incoming& in) {
  last_heard_ = Clock::now();
  metrics_.connected.Set(1);
  if (in.error) {
    spdlog::warn("malformed message from broker error=\"{}\"", in.error->message);
    return;
  }
  const auto& type = in.type;
  if (type == msg::kTask) return on_task(in.body->view());
  if (type == msg::kTasks || type == msg::kResultAck) {
    // A batch (docs/protocol.md): `tasks: [assignment...]`, `acks: [{task_id, attempt}...]`; a
    // `tasks` message may carry `acks` too (kAcksInTasks, which this worker announces).
    const bool tasks = type == msg::kTasks;
    const auto v = in.body->view();
    if (!tasks && !v.has("acks")) return on_result_ack(v);
    for (std::string_view field : {std::string_view("acks"), std::string_view("tasks")}) {
      if (field == "tasks" && !tasks) break;
      auto items = v.array_or_empty(field);
      if (!items) {
        spdlog::warn("malformed {} from broker error=\"{}\"", type, items.error().message);
        return;
      }
      for (const auto* item : *items) {
        if (item->type != msgpack::type::MAP) continue;
        field == "acks" ? on_result_ack(protocol::MapView(item)) : on_task(protocol::MapView(item));
      }
    }
    return;
  }
  if (type == msg::kCancel) return on_cancel(in);
  if (type == msg::kHeartbeat) return;
  if (type == msg::kReconnect) {
    spdlog::info("broker does not know this worker (restarted?); re-announcing");
    metrics_.reconnects.Increment();
    return announce();
  }
  if (type == msg::kError && in.req == 0) last_unreadable_ = Clock::now();  // see resend_result()
  if (type == msg::kUploadReady || type == msg::kUploadAck || type == msg::kUploadDone || type == msg::kError) {
    return on_upload_reply(in);
  }
  spdlog::warn("unexpected message from broker type={}", type);
}

void Worker::on_result_ack(const protocol::MapView& ack) {
  std::string id(ack.str_or("task_id", ""));
  auto it = runs_.find(id);
  if (it != runs_.end() && it->second->phase == Phase::kReporting && it->second->task().attempt == ack.i64_or("attempt", 0)) {
    erase_run(it);
    metrics_.busy.Set(static_cast<double>(busy_slots()));
  }
}

void Worker::on_task(const protocol::MapView& body) {
  auto task = protocol::TaskAssignment::decode(body);
  if (!task || !valid_task_id(task->task_id)) {
    spdlog::warn("malformed task from broker error=\"{}\"", task ? "bad task id" : task.error().message);
    return;
  }
  if (runs_.count(task->task_id)) return;  // duplicate delivery
  metrics_.started.Increment();
  if (busy_slots() >= options_.slots) spdlog::warn("task beyond slots task={} busy={}", task->task_id, busy_slots());
  if (options_.builtin_noop == BuiltinNoop::kOn && task->plugin == kNoopPlugin) return run_builtin(*task);

  auto run = std::make_unique<TaskRun>(*task);
  run->slot = free_slot();
  if (auto started = start_attempt(*run, plugins_, options_.policy, options_.work_dir); !started) {
    return reject(*task, started.error().error, std::move(started.error().layers));
  }
  runs_[task->task_id] = std::move(run);
  metrics_.busy.Set(static_cast<double>(busy_slots()));
}

void Worker::reject(const protocol::TaskAssignment& task, const Error& e, std::vector<std::string> layers) {
  auto run = std::make_unique<TaskRun>(task);
  run->workspace = options_.work_dir / (task.task_id + "-" + std::to_string(task.attempt));
  run->outcome.state = std::string(state::kFailed);
  run->outcome.error_code = std::string(code_name(e.code));
  run->outcome.error_message = e.message;
  run->outcome.layers = std::move(layers);
  TaskRun& ref = *run;
  runs_[task.task_id] = std::move(run);
  report(ref);
}

// A built-in task completes here, in the loop turn that received it: no workspace, no process.
void Worker::run_builtin(const protocol::TaskAssignment& task) {
  auto run = std::make_unique<TaskRun>(task);
  run->outcome = run_noop(task);
  TaskRun& ref = *run;
  runs_[task.task_id] = std::move(run);
  report(ref);
}

void Worker::on_cancel(transport::Incoming& in) {
  std::string id(in.body->view().str_or("task_id", ""));
  auto it = runs_.find(id);
  if (it == runs_.end()) return;
  if (it->second->phase == Phase::kRunning && it->second->process) {
    spdlog::info("task cancel requested task={}", id);
    it->second->process->cancel();
  }
}

void Worker::after_handler(TaskRun& run) {
  finish_attempt(run);
  metrics_.run_time.Observe(static_cast<double>(run.outcome.wall_ms) / 1000.0);
  metrics_.output_bytes.Increment(static_cast<double>(run.output_bytes));
  run.phase = Phase::kUploading;
  next_upload(run);
}

void Worker::next_upload(TaskRun& run) {
  if (run.upload) return;
  if (run.to_upload.empty()) return report(run);
  ActiveUpload up;
  up.artifact = std::move(run.to_upload.front());
  run.to_upload.erase(run.to_upload.begin());
  if (up.artifact.meta.sha256.empty()) {  // too large to hash first
    auto hasher = SendHasher::start();
    if (!hasher) {
      run.outcome.artifact_errors.push_back(up.artifact.meta.name + ": " + hasher.error().to_string());
      return next_upload(run);
    }
    up.hasher = std::move(*hasher);
  }
  up.req = next_req_++;
  up.last_progress = Clock::now();
  req_to_task_[up.req] = run.task().task_id;
  const auto& m = up.artifact.meta;
  Writer w;
  w.begin_map().kv("req", up.req).kv("task_id", run.task().task_id).kv("attempt", run.task().attempt);
  m.encode(w);
  w.end_map();
  run.upload = std::move(up);
  send(msg::kUploadBegin, w.take());
}

void Worker::pump_upload(TaskRun& run) {
  auto& up = *run.upload;
  const std::int64_t size = up.artifact.meta.size;
  while (up.sent < size && up.sent - up.acked < up.window * up.chunk_bytes) {
    auto n = static_cast<std::size_t>(std::min(up.chunk_bytes, size - up.sent));
    zmq::message_t chunk;
    if (up.hasher) {
      // Read once; hashed on the hasher's thread while this message is sent.
      auto read = up.hasher->read_chunk(up.artifact.fd.get(), up.sent, n);
      if (!read) return finish_upload(run, read.error());
      chunk = std::move(*read);
    } else {
      chunk.rebuild(n);
      ssize_t got = ::pread(up.artifact.fd.get(), chunk.data(), n, up.sent);
      if (got != static_cast<ssize_t>(n)) {
        return finish_upload(run, Error{ErrorCode::kIoError, "artifact changed or unreadable while uploading", {}});
      }
    }
    Writer w;
    w.begin_map().kv("req", up.req).kv("upload_id", up.upload_id).kv("offset", up.sent).end_map();
    std::vector<zmq::message_t> data;
    data.push_back(std::move(chunk));
    send(msg::kUploadChunk, w.take(), std::move(data));
    up.sent += static_cast<std::int64_t>(n);
  }
  if (up.sent == size && up.acked == size && !up.ending) {
    up.ending = true;
    Writer w;
    w.begin_map().kv("req", up.req).kv("upload_id", up.upload_id);
    if (up.hasher) {
      up.artifact.meta.sha256 = up.hasher->hex_digest();
      up.hasher.reset();
      w.kv("sha256", up.artifact.meta.sha256);
    }
    w.end_map();
    send(msg::kUploadEnd, w.take());
  }
}

void Worker::on_upload_reply(transport::Incoming& in) {
  const auto v = in.body->view();
  std::string task_id;
  if (auto it = req_to_task_.find(in.req); in.req != 0 && it != req_to_task_.end()) {
    task_id = it->second;
  } else if (auto u = upload_to_task_.find(std::string(v.str_or("upload_id", ""))); u != upload_to_task_.end()) {
    task_id = u->second;
  }
  auto it = runs_.find(task_id);
  if (it == runs_.end() || !it->second->upload) return;
  TaskRun& run = *it->second;
  auto& up = *run.upload;
  up.last_progress = Clock::now();
  if (in.type == msg::kError) return finish_upload(run, protocol::decode_error(v));
  if (in.type == msg::kUploadReady) {
    if (v.bool_or("have", false)) return finish_upload(run, std::nullopt);
    up.upload_id = std::string(v.str_or("upload_id", ""));
    up.chunk_bytes = std::clamp<std::int64_t>(v.i64_or("chunk_bytes", up.chunk_bytes), 4096, 4 << 20);
    up.window = std::clamp<std::int64_t>(v.i64_or("window", up.window), 1, 64);
    upload_to_task_[up.upload_id] = task_id;
    return pump_upload(run);
  }
  if (in.type == msg::kUploadAck) {
    up.acked = std::max(up.acked, v.i64_or("received", up.acked));
    return pump_upload(run);
  }
  // upload_done
  if (v.bool_or("ok", false)) return finish_upload(run, std::nullopt);
  auto err = v.map_or_none("error");
  Error e{ErrorCode::kArtifactUploadFailed, "the broker refused the upload", {}};
  if (err && *err) e = protocol::decode_error(**err);
  finish_upload(run, e);
}

void Worker::finish_upload(TaskRun& run, const std::optional<Error>& error) {
  auto& up = *run.upload;
  if (error) {
    spdlog::warn("artifact upload failed task={} name={} error=\"{}\"", run.task().task_id, up.artifact.meta.name,
                 error->message);
    run.outcome.artifact_errors.push_back(up.artifact.meta.name + ": " + error->to_string());
  } else {
    metrics_.artifact_bytes.Increment(static_cast<double>(up.sent));
  }
  req_to_task_.erase(up.req);
  upload_to_task_.erase(up.upload_id);
  run.upload.reset();
  next_upload(run);
}

void Worker::report(TaskRun& run) {
  if (run.phase != Phase::kReporting) ++reporting_;
  run.phase = Phase::kReporting;
  flush_events(run);  // its output before its result, so `done` is its last event
  send_result(run);
  metrics_.finished.increment(run.outcome.state, run.outcome.error_code);
  spdlog::debug("task reported task={} state={}", run.task().task_id, run.outcome.state);
  retire_attempt(run);  // built-in tasks have no workspace
  metrics_.busy.Set(static_cast<double>(busy_slots()));
}

void Worker::send_result(TaskRun& run) {
  Writer w;
  w.begin_map().kv("task_id", run.task().task_id).kv("attempt", run.task().attempt).key("outcome").begin_map();
  run.outcome.encode(w);
  w.end_map().end_map();
  std::string body = w.take();
  if (pending_result_bytes_ + body.size() > protocol::kMaxResultsBatchBytes ||
      pending_results_.size() >= protocol::kMaxItemsPerBatch) {
    flush_results();
  }
  pending_result_bytes_ += body.size();
  pending_results_.push_back(std::move(body));
  run.result_sent_at = Clock::now();
}

void Worker::flush_results() {
  if (pending_results_.empty()) return;
  if (pending_results_.size() == 1) {
    send(msg::kResult, std::move(pending_results_.front()));
  } else {
    Writer w;
    w.begin_map().key("results").begin_array();
    for (const auto& r : pending_results_) w.raw(r);
    w.end_array().end_map();
    send(msg::kResults, w.take());
  }
  pending_results_.clear();
  pending_result_bytes_ = 0;
}

bool Worker::resend_result(TaskRun& run) {
  // The broker acknowledges every result it can decode, even stale ones, and answers a message
  // it cannot read with PROTOCOL_ERROR and req 0 (docs/protocol.md). Such an answer since the
  // last send, with no acknowledgement, means it could not read this result, and sending the
  // same bytes forever would not change that. Heartbeats prove nothing: a busy broker sends them
  // while earlier messages of ours still wait in its queue. A silent or slow broker counts
  // nothing: the result waits for it however long it takes.
  if (last_unreadable_ > run.result_sent_at) ++run.unread_sends;
  if (run.unread_sends >= kMaxUnreadSends) {
    metrics_.results_unread.Increment();
    if (run.result_reduced) {
      spdlog::error("result given up: the broker answers but cannot read even a minimal failure task={} attempt={}",
                    run.task().task_id, run.task().attempt);
      return false;
    }
    spdlog::warn("result not acknowledged by a live broker after {} sends; sending a minimal failure instead task={} attempt={}",
                 run.unread_sends, run.task().task_id, run.task().attempt);
    protocol::TaskOutcome reduced;
    reduced.state = std::string(state::kFailed);
    reduced.error_code = std::string(code_name(ErrorCode::kProtocolError));
    reduced.error_message = "the broker could not read this task's result (it answered, but never acknowledged it); the "
                            "handler's result and artifact list were dropped: see the worker's log";
    reduced.exit_code = run.outcome.exit_code;
    reduced.signal = run.outcome.signal;
    reduced.cpu_ms = run.outcome.cpu_ms;
    reduced.max_rss_kb = run.outcome.max_rss_kb;
    reduced.wall_ms = run.outcome.wall_ms;
    reduced.layers = run.outcome.layers;
    run.outcome = std::move(reduced);
    run.result_reduced = true;
    run.unread_sends = 0;
  }
  send_result(run);
  return true;
}

void Worker::flush_events() {
  for (auto& [id, run] : runs_) flush_events(*run);
}

void Worker::flush_events(TaskRun& run) {
  auto n = run.pending_events();
  if (n == 0) return;
  // A chatty handler can buffer more events in one loop turn than the broker takes per
  // message (kMaxEventsPerBatch); one oversized batch used to be dropped whole.
  while (run.pending_events() > 0) send(msg::kTaskEvents, run.take_events());
  metrics_.events_sent.Increment(static_cast<double>(n));
}

void Worker::on_tick(Clock::time_point now) {
  std::vector<std::string> given_up;
  for (auto& [id, run] : runs_) {
    switch (run->phase) {
      case Phase::kRunning:
        if (run->process && run->process->finished()) {
          flush_events(*run);  // its output before its artifact and done events
          after_handler(*run);
        }
        break;
      case Phase::kUploading:
        if (run->upload && now - run->upload->last_progress > kUploadStall) {
          finish_upload(*run, Error{ErrorCode::kArtifactUploadFailed, "the broker stopped answering during the upload", {}});
        }
        break;
      case Phase::kReporting:
        if (now - run->result_sent_at > kResultResend && !resend_result(*run)) given_up.push_back(id);
        break;
    }
  }
  for (const auto& id : given_up) {
    if (auto it = runs_.find(id); it != runs_.end()) erase_run(it);
  }
  const auto interval = std::chrono::milliseconds(options_.heartbeat_ms);
  if (now - last_sent_ >= interval) send(msg::kHeartbeat, Writer().begin_map().end_map().take());
  if (now - last_heard_ > interval * options_.liveness) {
    spdlog::warn("broker silent for {} ms; re-announcing", options_.heartbeat_ms * options_.liveness);
    metrics_.connected.Set(0);
    metrics_.reconnects.Increment();
    last_heard_ = now;
    announce();
  }
}

// The lowest slot number no running task holds; it picks the task's host user (identity.hpp).
int Worker::free_slot() const {
  std::vector<bool> used(runs_.size() + 1, false);
  for (const auto& [id, run] : runs_) {
    if (run->slot >= 0 && static_cast<std::size_t>(run->slot) < used.size()) used[static_cast<std::size_t>(run->slot)] = true;
  }
  return static_cast<int>(std::find(used.begin(), used.end(), false) - used.begin());
}

void Worker::erase_run(std::map<std::string, std::unique_ptr<TaskRun>>::iterator it) {
  if (it->second->phase == Phase::kReporting) --reporting_;
  runs_.erase(it);
}

}  // namespace kbfleet::worker
