// Fuzzes the broker/worker/client message decoder: Body::decode with the default limits, every
// typed decoder in messages.hpp on the decoded map, the MapView getters and msgpack_to_json.
// Invariant checked (a failure traps): a message that decodes re-encodes, with its own encode(),
// into bytes that decode again, and re-encoding that is a fixed point (same bytes).
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"

namespace {

using namespace kbfleet::protocol;

[[noreturn]] void invariant_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant broken: %s: %s\n", what, detail.c_str());
  __builtin_trap();
}

template <typename Message>
std::string encode_body(const Message& m) {
  Writer w;
  w.begin_map();
  m.encode(w);
  w.end_map();
  return w.take();
}

template <typename Message>
void round_trip(const MapView& view, const char* name) {
  auto first = Message::decode(view);
  if (!first) return;
  std::string bytes = encode_body(*first);
  auto body = Body::decode(bytes);
  if (!body) invariant_failed(name, "re-encoded body does not decode: " + body.error().to_string());
  auto second = Message::decode(body->view());
  if (!second) invariant_failed(name, "re-encoded message does not decode: " + second.error().to_string());
  if (encode_body(*second) != bytes) invariant_failed(name, "encode(decode(encode(m))) != encode(m)");
}

void round_trip_error(const MapView& view) {
  kbfleet::Error first = decode_error(view);
  Writer w;
  w.begin_map();
  encode_error(w, view.i64_or("req", 0), first);
  w.end_map();
  std::string bytes = w.take();
  auto body = Body::decode(bytes);
  if (!body) invariant_failed("error", "re-encoded body does not decode: " + body.error().to_string());
  kbfleet::Error second = decode_error(body->view());
  if (second.code != first.code || second.message != first.message || second.details != first.details) {
    invariant_failed("error", "decode_error(encode_error(e)) != e");
  }
}

// Every getter on one key; nested maps are visited up to `depth` more levels.
void exercise_getters(const MapView& view, std::string_view key, int depth);

void exercise_map(const MapView& view, int depth) {
  static constexpr std::string_view kKnownKeys[] = {
      "req",   "plugin",  "handler", "input",    "env",    "task_id", "attempt", "state",
      "error", "outcome", "events",  "plugins",  "slots",  "data",    "code",    "details",
      "size",  "sha256",  "layers",  "artifacts"};
  for (auto key : kKnownKeys) exercise_getters(view, key, depth);
  // And the keys actually present (the first few), whatever their names.
  const msgpack::object* obj = view.object();
  if (obj == nullptr || obj->type != msgpack::type::MAP) return;
  std::uint32_t n = obj->via.map.size < 8 ? obj->via.map.size : 8;
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto& k = obj->via.map.ptr[i].key;
    if (k.type == msgpack::type::STR) exercise_getters(view, std::string_view(k.via.str.ptr, k.via.str.size), depth);
  }
}

void exercise_getters(const MapView& view, std::string_view key, int depth) {
  (void)view.has(key);
  if (auto s = view.str(key); s && view.str_or(key, "x") != *s) invariant_failed("MapView", "str_or != str");
  if (auto i = view.i64(key); i && view.i64_or(key, 7) != *i) invariant_failed("MapView", "i64_or != i64");
  (void)view.f64_or(key, 0.5);
  (void)view.bool_or(key, false);
  (void)view.str_list_or_empty(key);
  (void)view.str_map_or_empty(key);
  if (auto elems = view.array_or_empty(key); elems && depth > 0) {
    for (const auto* e : *elems) {
      if (e->type == msgpack::type::MAP) exercise_map(MapView(e), depth - 1);
    }
  }
  if (auto nested = view.map_or_none(key); nested && *nested && depth > 0) exercise_map(**nested, depth - 1);
  std::string raw = view.raw(key);
  if (!raw.empty()) (void)msgpack_to_json(raw);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)msgpack_to_json(bytes);

  auto body = Body::decode(bytes);
  if (!body) return 0;
  MapView view = body->view();
  (void)to_json(*view.object());
  exercise_map(view, 2);

  round_trip<SubmitRequest>(view, "SubmitRequest");
  round_trip<TaskAssignment>(view, "TaskAssignment");
  round_trip<ArtifactMeta>(view, "ArtifactMeta");
  round_trip<TaskOutcome>(view, "TaskOutcome");
  round_trip<PluginOffer>(view, "PluginOffer");
  round_trip<WorkerReady>(view, "WorkerReady");
  round_trip<Event>(view, "Event");
  round_trip_error(view);
  // The broker reads a result's outcome one level down (broker/worker_api.cpp, on_result).
  if (auto outcome = view.map_or_none("outcome"); outcome && *outcome) round_trip<TaskOutcome>(**outcome, "outcome");
  return 0;
}
