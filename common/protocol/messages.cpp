#include "common/protocol/messages.hpp"

#include <chrono>

namespace kbfleet::protocol {

#define KB_TRY_ASSIGN(lhs, expr)            \
  do {                                      \
    auto kb_r_ = (expr);                    \
    if (!kb_r_) return tl::unexpected(kb_r_.error()); \
    lhs = *std::move(kb_r_);                \
  } while (0)

bool state::is_terminal(std::string_view s) {
  return s == kSucceeded || s == kFailed || s == kCancelled || s == kTimedOut || s == kDeadLetter;
}

namespace {
// One allocation: the topic is built for every event the broker publishes.
std::string prefixed(std::string_view prefix, std::string_view id) {
  std::string out;
  out.reserve(prefix.size() + id.size());
  out.append(prefix).append(id);
  return out;
}
}  // namespace

std::string task_topic(std::string_view task_id) { return prefixed("task.", task_id); }
std::string plugin_topic(std::string_view plugin_id) { return prefixed("plugin.", plugin_id); }

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- SubmitRequest ---------------------------------------------------------------------------

void SubmitRequest::encode(Writer& w) const {
  SubmitRequestRef{plugin, version, handler, input, env, priority, timeout_ms, idempotency_key, max_attempts}.encode(w);
}

void SubmitRequestRef::encode(Writer& w) const {
  w.kv("plugin", plugin).kv("version", version).kv("handler", handler);
  w.key("input").raw(input);
  w.kv_map("env", env).kv("priority", priority).kv("timeout_ms", timeout_ms);
  if (!idempotency_key.empty()) w.kv("idempotency_key", idempotency_key);
  if (max_attempts > 0) w.kv("max_attempts", max_attempts);
}

Result<SubmitRequest> SubmitRequest::decode(const MapView& m) {
  SubmitRequest r;
  KB_TRY_ASSIGN(r.plugin, m.str("plugin").map([](auto s) { return std::string(s); }));
  r.version = std::string(m.str_or("version", ""));
  KB_TRY_ASSIGN(r.handler, m.str("handler").map([](auto s) { return std::string(s); }));
  r.input = m.raw("input");
  KB_TRY_ASSIGN(r.env, m.str_map_or_empty("env"));
  r.priority = m.i64_or("priority", 0);
  r.timeout_ms = m.i64_or("timeout_ms", 0);
  r.idempotency_key = std::string(m.str_or("idempotency_key", ""));
  r.max_attempts = m.i64_or("max_attempts", 0);
  if (r.max_attempts < 0 || r.max_attempts > 10) {
    return make_error(ErrorCode::kInvalidArgument, "max_attempts must be between 1 and 10 (0 = the policy)",
                      {{"field", "max_attempts"}});
  }
  if (r.timeout_ms < 0) {
    return make_error(ErrorCode::kInvalidArgument, "timeout_ms must be >= 0", {{"field", "timeout_ms"}});
  }
  return r;
}

// ---- TaskAssignment --------------------------------------------------------------------------

void TaskAssignment::encode(Writer& w) const {
  TaskAssignmentRef{task_id, attempt, plugin, version, handler, input, env, timeout_ms}.encode(w);
}

void TaskAssignmentRef::encode(Writer& w) const {
  w.kv("task_id", task_id).kv("attempt", attempt).kv("plugin", plugin).kv("version", version);
  w.kv("handler", handler);
  w.key("input").raw(input);
  w.kv_map("env", env).kv("timeout_ms", timeout_ms);
}

Result<TaskAssignment> TaskAssignment::decode(const MapView& m) {
  TaskAssignment t;
  KB_TRY_ASSIGN(t.task_id, m.str("task_id").map([](auto s) { return std::string(s); }));
  t.attempt = m.i64_or("attempt", 1);
  KB_TRY_ASSIGN(t.plugin, m.str("plugin").map([](auto s) { return std::string(s); }));
  t.version = std::string(m.str_or("version", ""));
  KB_TRY_ASSIGN(t.handler, m.str("handler").map([](auto s) { return std::string(s); }));
  t.input = m.raw("input");
  KB_TRY_ASSIGN(t.env, m.str_map_or_empty("env"));
  t.timeout_ms = m.i64_or("timeout_ms", 0);
  return t;
}

// ---- ArtifactMeta ----------------------------------------------------------------------------

void ArtifactMeta::encode(Writer& w) const {
  w.kv("name", name).kv("path", path).kv("size", size).kv("sha256", sha256);
  w.kv("content_type", content_type);
}

Result<ArtifactMeta> ArtifactMeta::decode(const MapView& m) {
  ArtifactMeta a;
  KB_TRY_ASSIGN(a.name, m.str("name").map([](auto s) { return std::string(s); }));
  a.path = std::string(m.str_or("path", ""));
  KB_TRY_ASSIGN(a.size, m.i64("size"));
  KB_TRY_ASSIGN(a.sha256, m.str("sha256").map([](auto s) { return std::string(s); }));
  a.content_type = std::string(m.str_or("content_type", "application/octet-stream"));
  return a;
}

// ---- TaskOutcome -----------------------------------------------------------------------------

void TaskOutcome::encode(Writer& w) const {
  w.kv("state", state).kv("exit_code", exit_code).kv("signal", signal);
  if (!error_code.empty()) {
    w.key("error").begin_map().kv("code", error_code).kv("message", error_message).end_map();
  }
  if (!result.empty()) w.key("result").raw(result);
  w.kv("cpu_ms", cpu_ms).kv("max_rss_kb", max_rss_kb).kv("wall_ms", wall_ms);
  w.kv_list("layers", layers);
  w.key("artifacts").begin_array();
  for (const auto& a : artifacts) {
    w.begin_map();
    a.encode(w);
    w.end_map();
  }
  w.end_array();
  if (!artifact_errors.empty()) w.kv_list("artifact_errors", artifact_errors);
}

Result<TaskOutcome> TaskOutcome::decode(const MapView& m) {
  TaskOutcome o;
  KB_TRY_ASSIGN(o.state, m.str("state").map([](auto s) { return std::string(s); }));
  if (!state::is_terminal(o.state)) {
    return make_error(ErrorCode::kProtocolError, "field 'state' must be a terminal task state",
                      {{"field", "state"}});
  }
  o.exit_code = m.i64_or("exit_code", -1);
  o.signal = m.i64_or("signal", 0);
  std::optional<MapView> err;
  KB_TRY_ASSIGN(err, m.map_or_none("error"));
  if (err) {
    o.error_code = std::string(err->str_or("code", "INTERNAL"));
    o.error_message = std::string(err->str_or("message", ""));
  }
  o.result = m.raw("result");
  o.cpu_ms = m.i64_or("cpu_ms", 0);
  o.max_rss_kb = m.i64_or("max_rss_kb", 0);
  o.wall_ms = m.i64_or("wall_ms", 0);
  KB_TRY_ASSIGN(o.layers, m.str_list_or_empty("layers"));
  std::vector<const msgpack::object*> arts;
  KB_TRY_ASSIGN(arts, m.array_or_empty("artifacts"));
  for (const auto* a : arts) {
    if (a->type != msgpack::type::MAP) {
      return make_error(ErrorCode::kProtocolError, "field 'artifacts' must hold maps", {{"field", "artifacts"}});
    }
    ArtifactMeta meta;
    KB_TRY_ASSIGN(meta, ArtifactMeta::decode(MapView(a)));
    o.artifacts.push_back(std::move(meta));
  }
  KB_TRY_ASSIGN(o.artifact_errors, m.str_list_or_empty("artifact_errors"));
  return o;
}

// ---- PluginOffer / WorkerReady ----------------------------------------------------------------

void PluginOffer::encode(Writer& w) const {
  w.kv("id", id).kv("version", version).kv_list("handlers", handlers);
  w.kv_list("capabilities", capabilities);
  if (!idempotent.empty()) w.kv_list("idempotent", idempotent);
  if (!error_code.empty()) {
    w.key("error").begin_map().kv("code", error_code).kv("message", error_message).end_map();
  }
}

Result<PluginOffer> PluginOffer::decode(const MapView& m) {
  PluginOffer p;
  KB_TRY_ASSIGN(p.id, m.str("id").map([](auto s) { return std::string(s); }));
  p.version = std::string(m.str_or("version", ""));
  KB_TRY_ASSIGN(p.handlers, m.str_list_or_empty("handlers"));
  KB_TRY_ASSIGN(p.capabilities, m.str_list_or_empty("capabilities"));
  KB_TRY_ASSIGN(p.idempotent, m.str_list_or_empty("idempotent"));
  std::optional<MapView> err;
  KB_TRY_ASSIGN(err, m.map_or_none("error"));
  if (err) {
    p.error_code = std::string(err->str_or("code", "MANIFEST_INVALID"));
    p.error_message = std::string(err->str_or("message", ""));
  }
  return p;
}

void WorkerReady::encode(Writer& w) const {
  w.kv("worker_id", worker_id).kv("host", host).kv("pid", pid).kv("slots", slots);
  w.kv_list("capabilities", capabilities).kv_list("layers", layers);
  w.key("plugins").begin_array();
  for (const auto& p : plugins) {
    w.begin_map();
    p.encode(w);
    w.end_map();
  }
  w.end_array();
  w.kv_list("running", running);
  if (!features.empty()) w.kv_list("features", features);
}

Result<WorkerReady> WorkerReady::decode(const MapView& m) {
  WorkerReady r;
  KB_TRY_ASSIGN(r.worker_id, m.str("worker_id").map([](auto s) { return std::string(s); }));
  r.host = std::string(m.str_or("host", ""));
  r.pid = m.i64_or("pid", 0);
  KB_TRY_ASSIGN(r.slots, m.i64("slots"));
  if (r.slots < 1 || r.slots > 4096) {
    return make_error(ErrorCode::kProtocolError, "field 'slots' must be between 1 and 4096", {{"field", "slots"}});
  }
  KB_TRY_ASSIGN(r.capabilities, m.str_list_or_empty("capabilities"));
  KB_TRY_ASSIGN(r.layers, m.str_list_or_empty("layers"));
  std::vector<const msgpack::object*> plugins;
  KB_TRY_ASSIGN(plugins, m.array_or_empty("plugins"));
  for (const auto* p : plugins) {
    if (p->type != msgpack::type::MAP) {
      return make_error(ErrorCode::kProtocolError, "field 'plugins' must hold maps", {{"field", "plugins"}});
    }
    PluginOffer offer;
    KB_TRY_ASSIGN(offer, PluginOffer::decode(MapView(p)));
    r.plugins.push_back(std::move(offer));
  }
  KB_TRY_ASSIGN(r.running, m.str_list_or_empty("running"));
  KB_TRY_ASSIGN(r.features, m.str_list_or_empty("features"));
  return r;
}

// ---- Event -----------------------------------------------------------------------------------

void Event::encode(Writer& w) const { EventRef{task_id, seq, type, ts_ms, plugin, attempt, data}.encode(w); }

void EventRef::encode(Writer& w) const {
  w.kv("task_id", task_id).kv("seq", seq).kv("type", type).kv("ts_ms", ts_ms);
  w.kv("plugin", plugin).kv("attempt", attempt);
  w.key("data").raw(data);
}

Result<Event> Event::decode(const MapView& m) {
  Event e;
  KB_TRY_ASSIGN(e.task_id, m.str("task_id").map([](auto s) { return std::string(s); }));
  KB_TRY_ASSIGN(e.seq, m.i64("seq"));
  KB_TRY_ASSIGN(e.type, m.str("type").map([](auto s) { return std::string(s); }));
  e.ts_ms = m.i64_or("ts_ms", 0);
  e.plugin = std::string(m.str_or("plugin", ""));
  e.attempt = m.i64_or("attempt", 1);
  e.data = m.raw("data");
  return e;
}

// ---- errors ----------------------------------------------------------------------------------

void encode_error(Writer& w, std::int64_t req, const Error& e) {
  w.kv("req", req).kv("code", code_name(e.code)).kv("message", e.message).kv_map("details", e.details);
}

Error decode_error(const MapView& m) {
  Error e;
  e.code = code_from_name(m.str_or("code", "INTERNAL"));
  e.message = std::string(m.str_or("message", "(no message)"));
  if (auto d = m.str_map_or_empty("details")) e.details = *d;
  return e;
}

}  // namespace kbfleet::protocol
