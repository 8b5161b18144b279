// Typed protocol messages: every message encodes and decodes to the same value, and decoding names
// the first bad field (common/protocol/messages.hpp, docs/protocol.md).
#include <catch2/catch.hpp>

#include <string>

#include "common/protocol/messages.hpp"

namespace kbfleet::protocol {
namespace {

template <typename T>
std::string encode_body(const T& value) {
  Writer w;
  w.begin_map();
  value.encode(w);
  w.end_map();
  return w.take();
}

template <typename T>
Result<T> round_trip(const T& value) {
  auto body = Body::decode(encode_body(value));
  REQUIRE(body.has_value());
  return T::decode(body->view());
}

template <typename T>
Error decode_error_of(const std::string& bytes) {
  auto body = Body::decode(bytes);
  REQUIRE(body.has_value());
  auto r = T::decode(body->view());
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

std::string msgpack_of_json(const std::string& json) { return json_to_msgpack(json).value(); }

ArtifactMeta sample_artifact(const std::string& name) {
  ArtifactMeta a;
  a.name = name;
  a.path = "out/" + name + ".txt";
  a.size = 1234;
  a.sha256 = std::string(64, 'a');
  a.content_type = "text/plain";
  return a;
}

void check_same(const ArtifactMeta& a, const ArtifactMeta& b) {
  CHECK(a.name == b.name);
  CHECK(a.path == b.path);
  CHECK(a.size == b.size);
  CHECK(a.sha256 == b.sha256);
  CHECK(a.content_type == b.content_type);
}

}  // namespace

TEST_CASE("a submit request round-trips with every field", "[protocol][messages]") {
  SubmitRequest r;
  r.plugin = "hello";
  r.version = "1.0.0";
  r.handler = "greet";
  r.input = msgpack_of_json(R"({"name":"python","n":[1,2]})");
  r.env = {{"LANG", "C"}, {"CI_JOB", "7"}};
  r.priority = -3;
  r.timeout_ms = 2500;
  r.idempotency_key = "job-7";
  auto d = round_trip(r);
  REQUIRE(d.has_value());
  CHECK(d->plugin == r.plugin);
  CHECK(d->version == r.version);
  CHECK(d->handler == r.handler);
  CHECK(d->input == r.input);
  CHECK(d->env == r.env);
  CHECK(d->priority == r.priority);
  CHECK(d->timeout_ms == r.timeout_ms);
  CHECK(d->idempotency_key == r.idempotency_key);
}

TEST_CASE("a submit request takes documented defaults for missing optional keys", "[protocol][messages]") {
  Writer w;
  w.begin_map().kv("req", 1).kv("plugin", "hello").kv("handler", "greet").kv("unknown_key", "ignored").end_map();
  auto body = Body::decode(w.take());
  REQUIRE(body.has_value());
  auto d = SubmitRequest::decode(body->view());
  REQUIRE(d.has_value());
  CHECK(d->version.empty());
  CHECK(d->input.empty());
  CHECK(d->env.empty());
  CHECK(d->priority == 0);
  CHECK(d->timeout_ms == 0);
  CHECK(d->idempotency_key.empty());
}

TEST_CASE("a submit request with a bad field is refused naming the field", "[protocol][messages]") {
  SECTION("plugin is missing") {
    Writer w;
    w.begin_map().kv("handler", "greet").end_map();
    auto e = decode_error_of<SubmitRequest>(w.take());
    CHECK(e.code == ErrorCode::kProtocolError);
    CHECK(e.message == "field 'plugin' is missing");
  }
  SECTION("handler is not a string") {
    Writer w;
    w.begin_map().kv("plugin", "hello").kv("handler", 5).end_map();
    auto e = decode_error_of<SubmitRequest>(w.take());
    CHECK(e.code == ErrorCode::kProtocolError);
    CHECK(e.details.at("field") == "handler");
  }
  SECTION("env holds a non-string value") {
    Writer w;
    w.begin_map().kv("plugin", "hello").kv("handler", "greet").key("env").begin_map().kv("A", 1).end_map().end_map();
    auto e = decode_error_of<SubmitRequest>(w.take());
    CHECK(e.code == ErrorCode::kProtocolError);
    CHECK(e.details.at("field") == "env");
  }
  SECTION("a negative timeout") {
    Writer w;
    w.begin_map().kv("plugin", "hello").kv("handler", "greet").kv("timeout_ms", -1).end_map();
    auto e = decode_error_of<SubmitRequest>(w.take());
    CHECK(e.code == ErrorCode::kInvalidArgument);
    CHECK(e.details.at("field") == "timeout_ms");
  }
}

TEST_CASE("a task assignment round-trips", "[protocol][messages]") {
  TaskAssignment t;
  t.task_id = std::string(32, 'f');
  t.attempt = 2;
  t.plugin = "hello";
  t.version = "1.0.0";
  t.handler = "greet";
  t.input = msgpack_of_json(R"(["a",{"b":null}])");
  t.env = {{"LANG", "C.UTF-8"}};
  t.timeout_ms = 10000;
  auto d = round_trip(t);
  REQUIRE(d.has_value());
  CHECK(d->task_id == t.task_id);
  CHECK(d->attempt == 2);
  CHECK(d->plugin == t.plugin);
  CHECK(d->version == t.version);
  CHECK(d->handler == t.handler);
  CHECK(d->input == t.input);
  CHECK(d->env == t.env);
  CHECK(d->timeout_ms == t.timeout_ms);

  SECTION("task_id must be a string") {
    Writer w;
    w.begin_map().kv("task_id", 1).kv("plugin", "p").kv("handler", "h").end_map();
    CHECK(decode_error_of<TaskAssignment>(w.take()).details.at("field") == "task_id");
  }
}

TEST_CASE("an artifact round-trips and needs name, size and sha256", "[protocol][messages]") {
  auto a = sample_artifact("report");
  auto d = round_trip(a);
  REQUIRE(d.has_value());
  check_same(*d, a);

  Writer w;
  w.begin_map().kv("name", "report").kv("size", "12").kv("sha256", "ab").end_map();
  CHECK(decode_error_of<ArtifactMeta>(w.take()).message == "field 'size' must be an integer");

  Writer minimal;
  minimal.begin_map().kv("name", "r").kv("size", 0).kv("sha256", "00").end_map();
  auto body = Body::decode(minimal.take());
  REQUIRE(body.has_value());
  auto m = ArtifactMeta::decode(body->view());
  REQUIRE(m.has_value());
  CHECK(m->content_type == "application/octet-stream");
}

TEST_CASE("a task outcome round-trips with error, result and artifacts", "[protocol][messages]") {
  TaskOutcome o;
  o.state = "failed";
  o.exit_code = 3;
  o.signal = 9;
  o.error_code = "HANDLER_FAILED";
  o.error_message = "exit status 3";
  o.result = msgpack_of_json(R"({"greeting":"hello, python"})");
  o.cpu_ms = 12;
  o.max_rss_kb = 3456;
  o.wall_ms = 78;
  o.layers = {"pgroup", "rlimits"};
  o.artifacts = {sample_artifact("a"), sample_artifact("b")};
  o.artifact_errors = {"c: HASH_MISMATCH: bytes differ"};
  auto d = round_trip(o);
  REQUIRE(d.has_value());
  CHECK(d->state == o.state);
  CHECK(d->exit_code == 3);
  CHECK(d->signal == 9);
  CHECK(d->error_code == o.error_code);
  CHECK(d->error_message == o.error_message);
  CHECK(d->result == o.result);
  CHECK(d->cpu_ms == 12);
  CHECK(d->max_rss_kb == 3456);
  CHECK(d->wall_ms == 78);
  CHECK(d->layers == o.layers);
  REQUIRE(d->artifacts.size() == 2);
  check_same(d->artifacts[0], o.artifacts[0]);
  check_same(d->artifacts[1], o.artifacts[1]);
  CHECK(d->artifact_errors == o.artifact_errors);

  SECTION("a success without error, result or artifacts") {
    TaskOutcome ok;
    ok.state = "succeeded";
    ok.exit_code = 0;
    auto s = round_trip(ok);
    REQUIRE(s.has_value());
    CHECK(s->error_code.empty());
    CHECK(s->result.empty());
    CHECK(s->artifacts.empty());
    CHECK(s->artifact_errors.empty());
  }
}

TEST_CASE("a task outcome must be terminal and hold artifact maps", "[protocol][messages]") {
  SECTION("a running state") {
    Writer w;
    w.begin_map().kv("state", "running").end_map();
    auto e = decode_error_of<TaskOutcome>(w.take());
    CHECK(e.code == ErrorCode::kProtocolError);
    CHECK(e.details.at("field") == "state");
  }
  SECTION("an artifact that is not a map") {
    Writer w;
    w.begin_map().kv("state", "succeeded").key("artifacts").begin_array().str("x").end_array().end_map();
    CHECK(decode_error_of<TaskOutcome>(w.take()).details.at("field") == "artifacts");
  }
  SECTION("an artifact missing its hash") {
    Writer w;
    w.begin_map().kv("state", "succeeded").key("artifacts").begin_array();
    w.begin_map().kv("name", "a").kv("size", 1).end_map();
    w.end_array().end_map();
    CHECK(decode_error_of<TaskOutcome>(w.take()).details.at("field") == "sha256");
  }
  SECTION("error that is not a map") {
    Writer w;
    w.begin_map().kv("state", "failed").kv("error", "boom").end_map();
    CHECK(decode_error_of<TaskOutcome>(w.take()).details.at("field") == "error");
  }
}

TEST_CASE("a ready message round-trips with plugin offers, broken ones included", "[protocol][messages]") {
  WorkerReady r;
  r.worker_id = "w-1";
  r.host = "host-a";
  r.pid = 4242;
  r.slots = 4;
  r.capabilities = {"net", "gpu"};
  r.layers = {"pgroup", "netns"};
  PluginOffer good;
  good.id = "hello";
  good.version = "1.0.0";
  good.handlers = {"greet", "shout"};
  good.capabilities = {"net"};
  PluginOffer broken;
  broken.id = "bad";
  broken.error_code = "MANIFEST_INVALID";
  broken.error_message = "handlers: missing";
  r.plugins = {good, broken};
  r.running = {std::string(32, '1')};
  auto d = round_trip(r);
  REQUIRE(d.has_value());
  CHECK(d->worker_id == r.worker_id);
  CHECK(d->host == r.host);
  CHECK(d->pid == r.pid);
  CHECK(d->slots == r.slots);
  CHECK(d->capabilities == r.capabilities);
  CHECK(d->layers == r.layers);
  CHECK(d->running == r.running);
  REQUIRE(d->plugins.size() == 2);
  CHECK(d->plugins[0].id == "hello");
  CHECK(d->plugins[0].version == "1.0.0");
  CHECK(d->plugins[0].handlers == good.handlers);
  CHECK(d->plugins[0].capabilities == good.capabilities);
  CHECK(d->plugins[0].error_code.empty());
  CHECK(d->plugins[1].id == "bad");
  CHECK(d->plugins[1].error_code == "MANIFEST_INVALID");
  CHECK(d->plugins[1].error_message == "handlers: missing");

  SECTION("a plugin offer on its own") {
    auto p = round_trip(good);
    REQUIRE(p.has_value());
    CHECK(p->handlers == good.handlers);
  }
}

TEST_CASE("a ready message with bad slots or plugins is refused", "[protocol][messages]") {
  auto ready_with = [](auto&& add) {
    Writer w;
    w.begin_map().kv("worker_id", "w");
    add(w);
    w.end_map();
    return w.take();
  };
  SECTION("slots missing") {
    auto e = decode_error_of<WorkerReady>(ready_with([](Writer&) {}));
    CHECK(e.message == "field 'slots' is missing");
  }
  SECTION("slots out of range") {
    for (int slots : {0, -1, 4097}) {
      auto e = decode_error_of<WorkerReady>(ready_with([&](Writer& w) { w.kv("slots", slots); }));
      CHECK(e.details.at("field") == "slots");
    }
  }
  SECTION("a plugin that is not a map") {
    auto e = decode_error_of<WorkerReady>(
        ready_with([](Writer& w) { w.kv("slots", 1).key("plugins").begin_array().i64(1).end_array(); }));
    CHECK(e.details.at("field") == "plugins");
  }
  SECTION("a plugin without an id") {
    auto e = decode_error_of<WorkerReady>(ready_with([](Writer& w) {
      w.kv("slots", 1).key("plugins").begin_array().begin_map().kv("version", "1").end_map().end_array();
    }));
    CHECK(e.details.at("field") == "id");
  }
  SECTION("capabilities that are not strings") {
    auto e = decode_error_of<WorkerReady>(ready_with([](Writer& w) {
      w.kv("slots", 1).key("capabilities").begin_array().i64(1).end_array();
    }));
    CHECK(e.details.at("field") == "capabilities");
  }
}

TEST_CASE("an event round-trips with its data map", "[protocol][messages]") {
  Event e;
  e.task_id = std::string(32, 'a');
  e.seq = 7;
  e.type = std::string(event::kOutput);
  e.ts_ms = 1700000000123;
  e.plugin = "hello";
  e.attempt = 1;
  e.data = msgpack_of_json(R"({"stream":"stdout","line":2,"text":"hello, python"})");
  auto d = round_trip(e);
  REQUIRE(d.has_value());
  CHECK(d->task_id == e.task_id);
  CHECK(d->seq == 7);
  CHECK(d->type == "output");
  CHECK(d->ts_ms == e.ts_ms);
  CHECK(d->plugin == "hello");
  CHECK(d->attempt == 1);
  CHECK(d->data == e.data);

  SECTION("seq must be an integer") {
    Writer w;
    w.begin_map().kv("task_id", "x").kv("seq", "1").kv("type", "done").end_map();
    CHECK(decode_error_of<Event>(w.take()).message == "field 'seq' must be an integer");
  }
}

TEST_CASE("an error reply carries code, message and details", "[protocol][messages]") {
  Error e{ErrorCode::kQueueFull, "retry later", {{"retry_after_ms", "1000"}}};
  Writer w;
  w.begin_map();
  encode_error(w, 42, e);
  w.end_map();
  auto body = Body::decode(w.take());
  REQUIRE(body.has_value());
  auto v = body->view();
  CHECK(v.i64("req").value() == 42);
  CHECK(v.str("code").value() == "QUEUE_FULL");
  auto d = decode_error(v);
  CHECK(d.code == ErrorCode::kQueueFull);
  CHECK(d.message == "retry later");
  CHECK(d.details == e.details);

  SECTION("an unknown code or a missing message still decodes") {
    Writer u;
    u.begin_map().kv("code", "FROM_THE_FUTURE").end_map();
    auto b = Body::decode(u.take());
    REQUIRE(b.has_value());
    auto err = decode_error(b->view());
    CHECK(err.code == ErrorCode::kInternal);
    CHECK(err.message == "(no message)");
  }
}

TEST_CASE("terminal states and topics are as documented", "[protocol][messages]") {
  for (auto s : {state::kSucceeded, state::kFailed, state::kCancelled, state::kTimedOut}) CHECK(state::is_terminal(s));
  for (auto s : {state::kQueued, state::kRunning, std::string_view("done"), std::string_view()}) {
    CHECK_FALSE(state::is_terminal(s));
  }
  CHECK(task_topic("abc") == "task.abc");
  CHECK(plugin_topic("hello") == "plugin.hello");
  CHECK(kProtocolTag == "KBF/1");
  CHECK(now_ms() > 1600000000000);
}

}  // namespace kbfleet::protocol
