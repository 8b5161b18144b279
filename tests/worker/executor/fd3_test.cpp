// fd 3: a handler's progress and result as JSON lines; bad lines are reported, never fatal.
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "common/protocol/wire.hpp"
#include "tests/worker/executor/handler_harness.hpp"
#include "worker/executor/fd3_parser.hpp"

namespace kbfleet::worker {
namespace {

using testing::Recorded;
using testing::TempDir;

nlohmann::json decode(const std::string& msgpack) {
  auto text = protocol::msgpack_to_json(msgpack);
  REQUIRE(text);
  return nlohmann::json::parse(*text);
}

TEST_CASE("progress and result written to fd 3 reach the sink", "[executor][fd3]") {
  TempDir ws;
  Recorded sink;
  auto p = testing::start(testing::shell(R"(
    echo '{"progress": 0.5, "message": "half way"}' >&3
    echo '{"progress": 1}' >&3
    echo '{"result": {"n": [1, 2.5, -3], "s": "x", "ok": true, "none": null}}' >&3
  )",
                                         ws.path()));
  testing::drive(*p, sink);

  REQUIRE(p->outcome().reason == EndReason::kExited);
  CHECK(sink.invalid.empty());
  REQUIRE(sink.progress_reports.size() == 2);
  CHECK(sink.progress_reports[0] == std::pair<double, std::string>{0.5, "half way"});
  CHECK(sink.progress_reports[1] == std::pair<double, std::string>{1.0, ""});
  REQUIRE(sink.results.size() == 1);
  CHECK(decode(sink.results[0]) ==
        nlohmann::json::parse(R"({"n": [1, 2.5, -3], "s": "x", "ok": true, "none": null})"));
}

TEST_CASE("an unterminated last fd 3 line is still parsed", "[executor][fd3]") {
  TempDir ws;
  Recorded sink;
  auto p = testing::start(testing::shell(R"(printf '{"result": 42}' >&3)", ws.path()));
  testing::drive(*p, sink);
  REQUIRE(sink.results.size() == 1);
  CHECK(decode(sink.results[0]) == 42);
}

TEST_CASE("invalid fd 3 lines are reported and the handler keeps running", "[executor][fd3]") {
  TempDir ws;
  Recorded sink;
  auto p = testing::start(testing::shell(R"(
    echo 'not json' >&3
    echo '[1, 2]' >&3
    echo '{"progress": 1.5}' >&3
    echo '{"progress": "half"}' >&3
    echo '{"progress": 0.1, "message": 7}' >&3
    echo '{"progress": 0.1, "result": 1}' >&3
    echo '{"other": 1}' >&3
    echo '{"result": "still fine"}' >&3
    echo done
  )",
                                         ws.path()));
  testing::drive(*p, sink);

  CHECK(p->outcome().reason == EndReason::kExited);
  CHECK(p->outcome().exit_code == 0);
  CHECK(sink.invalid == std::vector<std::string>{
                            "line is not valid JSON",
                            "line is not a JSON object",
                            "\"progress\" is outside [0, 1]",
                            "\"progress\" is not a number",
                            "\"message\" is not a string",
                            "line has both \"progress\" and \"result\"; send them separately",
                            "line has neither \"progress\" nor \"result\"",
                        });
  CHECK(sink.progress_reports.empty());
  REQUIRE(sink.results.size() == 1);
  CHECK(decode(sink.results[0]) == "still fine");
  CHECK(sink.saw(Stream::kStdout, "done"));
}

TEST_CASE("an fd 3 line over 1 MiB is reported and skipped up to its newline", "[executor][fd3]") {
  TempDir ws;
  Recorded sink;
  auto p = testing::start(testing::shell(R"(
    head -c 1100000 /dev/zero | tr '\0' a >&3
    echo >&3
    echo '{"progress": 0.25}' >&3
  )",
                                         ws.path()));
  testing::drive(*p, sink);

  CHECK(sink.invalid == std::vector<std::string>{"line is longer than 1048576 bytes"});
  REQUIRE(sink.progress_reports.size() == 1);
  CHECK(sink.progress_reports[0].first == 0.25);
}

TEST_CASE("deeply nested fd 3 JSON is refused before it reaches the encoder", "[executor][fd3]") {
  Recorded sink;
  handle_fd3_line(R"({"result": )" + std::string(100000, '[') + std::string(100000, ']') + "}",
                  sink);
  CHECK(sink.invalid == std::vector<std::string>{"JSON nests deeper than 24 levels"});

  // A result the broker could not carry (it decodes bodies to depth 32) is refused at the source:
  // fuzz/crashes/fd3_line_fuzz/result-nested-31-levels once left a worker re-sending it forever.
  Recorded deep;
  handle_fd3_line(R"({"result": )" + std::string(31, '[') + std::string(31, ']') + "}", deep);
  CHECK(deep.results.empty());
  CHECK(deep.invalid.size() == 1);
  Recorded fits;
  handle_fd3_line(R"({"result": )" + std::string(20, '[') + std::string(20, ']') + "}", fits);
  CHECK(fits.results.size() == 1);

  Recorded ok;
  // Brackets inside strings do not count.
  handle_fd3_line(R"({"result": ")" + std::string(1000, '[') + R"(\"]"})", ok);
  CHECK(ok.invalid.empty());
  CHECK(ok.results.size() == 1);
}

TEST_CASE("an fd 3 result wider than the broker decodes is refused at the source", "[executor][fd3]") {
  // A 1 MiB line holds arrays far longer than the broker reads in a message (100,000 entries) or
  // objects with more keys (10,000): such a result once left the worker re-sending it forever.
  const auto array_of = [](std::size_t n) {
    std::string a = "[0";
    for (std::size_t i = 1; i < n; ++i) a += ",0";
    return a + "]";
  };
  Recorded wide;
  handle_fd3_line(R"({"result": {"a": )" + array_of(100001) + "}}", wide);
  CHECK(wide.results.empty());
  CHECK(wide.invalid ==
        std::vector<std::string>{"\"result\" holds an array of 100001 entries (at most 100000); the broker could not read it"});

  std::string keys = "{";
  for (int i = 0; i <= 10000; ++i) keys += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":1";
  Recorded many_keys;
  handle_fd3_line(R"({"result": [)" + keys + "}]}", many_keys);
  CHECK(many_keys.results.empty());
  REQUIRE(many_keys.invalid.size() == 1);
  CHECK(many_keys.invalid[0].find("an object of 10001 keys (at most 10000)") != std::string::npos);

  Recorded at_limit;
  handle_fd3_line(R"({"result": )" + array_of(100000) + "}", at_limit);
  CHECK(at_limit.invalid.empty());
  CHECK(at_limit.results.size() == 1);
}

TEST_CASE("fd 3 lines split across reads are reassembled", "[executor][fd3]") {
  std::string stream = "{\"progress\": 0.5}\n\n{\"result\": [1]}\n";
  Recorded sink;
  Fd3Parser parser;
  for (char c : stream) parser.feed(std::string_view(&c, 1), sink);
  parser.finish(sink);
  CHECK(sink.invalid.empty());
  CHECK(sink.progress_reports.size() == 1);
  REQUIRE(sink.results.size() == 1);
  CHECK(decode(sink.results[0]) == nlohmann::json::array({1}));
}

}  // namespace
}  // namespace kbfleet::worker
