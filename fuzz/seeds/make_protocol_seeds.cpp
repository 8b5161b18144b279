// Writes the seed corpus of protocol_body_fuzz: real message bodies produced by the typed
// encoders in common/protocol/messages.hpp. Usage: make_protocol_seeds <dir>
// (scripts/fuzz.sh does not run it; rerun it by hand when messages change, then merge).
#include <cstdio>
#include <fstream>
#include <string>

#include "common/protocol/messages.hpp"

namespace {

using namespace kbfleet::protocol;

template <typename Message>
std::string body_of(const Message& m, std::int64_t req) {
  Writer w;
  w.begin_map();
  if (req > 0) w.kv("req", req);
  m.encode(w);
  w.end_map();
  return w.take();
}

void write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <dir>\n", argv[0]);
    return 64;
  }
  std::string dir = argv[1];
  std::string input = *json_to_msgpack(R"({"name":"x","n":[1,-2,3.5,true,null],"deep":{"a":{"b":"c"}}})");

  SubmitRequest submit{.plugin = "hello", .version = "1.0.0", .handler = "greet", .input = input,
                       .env = {{"LANG", "C"}}, .priority = 5, .timeout_ms = 1000, .idempotency_key = "key-1"};
  write(dir, "submit", body_of(submit, 1));

  TaskAssignment task{.task_id = "t-1", .attempt = 2, .plugin = "hello", .version = "1.0.0", .handler = "greet",
                      .input = input, .env = {{"CI_X", "1"}}, .timeout_ms = 30000};
  write(dir, "task", body_of(task, 0));

  ArtifactMeta art{.name = "report", .path = "out/report-t-1.txt", .size = 42, .sha256 = std::string(64, 'a'),
                   .content_type = "text/plain"};
  write(dir, "upload_begin", body_of(art, 3));

  TaskOutcome outcome;
  outcome.state = "failed";
  outcome.exit_code = 3;
  outcome.error_code = "HANDLER_FAILED";
  outcome.error_message = "exit 3";
  outcome.result = *json_to_msgpack(R"({"ok":false})");
  outcome.cpu_ms = 12;
  outcome.layers = {"namespaces", "seccomp"};
  outcome.artifacts = {art};
  outcome.artifact_errors = {"blob: ARTIFACT_NOT_FOUND: missing"};
  write(dir, "outcome", body_of(outcome, 0));
  Writer result;
  result.begin_map().kv("task_id", "t-1").kv("attempt", 1).key("outcome").begin_map();
  outcome.encode(result);
  result.end_map().end_map();
  write(dir, "result", result.take());

  PluginOffer offer;
  offer.id = "hello";
  offer.version = "1.0.0";
  offer.handlers = {"greet"};
  offer.capabilities = {"gpu"};
  PluginOffer broken;
  broken.id = "broken";
  broken.error_code = "MANIFEST_INVALID";
  broken.error_message = "handlers.run.exec: must be relative";
  write(dir, "plugin_offer", body_of(offer, 0));
  WorkerReady ready;
  ready.worker_id = "w-1";
  ready.host = "host";
  ready.pid = 1234;
  ready.slots = 4;
  ready.capabilities = {"gpu"};
  ready.layers = {"rlimits"};
  ready.plugins = {offer, broken};
  ready.running = {"t-0"};
  write(dir, "ready", body_of(ready, 0));

  Event event{.task_id = "t-1", .seq = 7, .type = "output", .ts_ms = 1700000000000, .plugin = "hello", .attempt = 1,
              .data = *json_to_msgpack(R"({"stream":"stdout","line":1,"text":"hi","partial":false})")};
  write(dir, "event", body_of(event, 0));

  Writer error;
  error.begin_map();
  encode_error(error, 9, kbfleet::Error{kbfleet::ErrorCode::kQueueFull, "queue is full", {{"limit", "1000"}}});
  error.end_map();
  write(dir, "error", error.take());
  return 0;
}
