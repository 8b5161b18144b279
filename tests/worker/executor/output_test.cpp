// stdout/stderr of a handler become numbered lines, split at kMaxLineBytes, cut at the output cap.
#include <signal.h>

#include <string>

#include <catch2/catch.hpp>

#include "tests/worker/executor/handler_harness.hpp"
#include "worker/executor/line_splitter.hpp"

namespace kbfleet::worker {
namespace {

using testing::Recorded;
using testing::TempDir;

struct Piece {
  std::int64_t line;
  std::size_t size;
  bool partial;
  bool operator==(const Piece&) const = default;
};

std::vector<Piece> pieces(const std::vector<OutputLine>& lines) {
  std::vector<Piece> out;
  for (const auto& l : lines) out.push_back({l.line, l.text.size(), l.partial});
  return out;
}

TEST_CASE("stdout and stderr lines arrive in order, numbered per stream", "[executor][output]") {
  TempDir ws;
  Recorded sink;
  auto p = testing::start(testing::shell(
      "echo one; echo two >&2; echo three; echo four >&2; echo five", ws.path()));
  testing::drive(*p, sink);

  REQUIRE(p->outcome().reason == EndReason::kExited);
  auto out = sink.of(Stream::kStdout);
  REQUIRE(out.size() == 3);
  CHECK(out[0].text == "one");
  CHECK(out[0].line == 1);
  CHECK(out[1].text == "three");
  CHECK(out[1].line == 2);
  CHECK(out[2].text == "five");
  CHECK(out[2].line == 3);
  auto err = sink.of(Stream::kStderr);
  REQUIRE(err.size() == 2);
  CHECK(err[0].text == "two");
  CHECK(err[0].line == 1);
  CHECK(err[1].text == "four");
  CHECK(err[1].line == 2);
  for (const auto& line : sink.lines) CHECK_FALSE(line.partial);
}

TEST_CASE("a line longer than the line limit arrives in partial pieces sharing one number",
          "[executor][output]") {
  TempDir ws;
  Recorded sink;
  SECTION("20000 bytes: two full pieces and the rest") {
    auto p = testing::start(testing::shell(
        "head -c 20000 /dev/zero | tr '\\0' x; echo; echo next", ws.path()));
    testing::drive(*p, sink);
    auto out = sink.of(Stream::kStdout);
    CHECK(pieces(out) == std::vector<Piece>{{1, kMaxLineBytes, true},
                                            {1, kMaxLineBytes, true},
                                            {1, 20000 - 2 * kMaxLineBytes, false},
                                            {2, 4, false}});
    CHECK(out[0].text == std::string(kMaxLineBytes, 'x'));
    CHECK(out.back().text == "next");
  }
  SECTION("exactly the limit: one piece, not partial") {
    auto p = testing::start(testing::shell(
        "head -c 8192 /dev/zero | tr '\\0' y; echo; echo next", ws.path()));
    testing::drive(*p, sink);
    CHECK(pieces(sink.of(Stream::kStdout)) ==
          std::vector<Piece>{{1, kMaxLineBytes, false}, {2, 4, false}});
  }
}

TEST_CASE("an unterminated last line is still delivered", "[executor][output]") {
  TempDir ws;
  Recorded sink;
  auto p = testing::start(testing::shell("printf 'a\\nb'; printf 'tail' >&2", ws.path()));
  testing::drive(*p, sink);

  auto out = sink.of(Stream::kStdout);
  REQUIRE(out.size() == 2);
  CHECK(out[1].text == "b");
  CHECK(out[1].line == 2);
  CHECK_FALSE(out[1].partial);
  CHECK(sink.texts(Stream::kStderr) == std::vector<std::string>{"tail"});
}

TEST_CASE("output beyond the limit is cut at the limit and the handler is killed",
          "[executor][output]") {
  TempDir ws;
  testing::Subreaper reaper;
  Recorded sink;
  auto spec = testing::shell("while :; do echo 0123456789; done", ws.path());
  spec.limits.output_bytes = 1005;  // 91 lines of 11 bytes = 1001, then 4 bytes
  auto p = testing::start(spec);
  testing::drive(*p, sink);

  CHECK(p->outcome().reason == EndReason::kOutputLimit);
  CHECK(p->outcome().signal == SIGKILL);
  auto out = sink.texts(Stream::kStdout);
  REQUIRE(out.size() == 92);
  CHECK(out[90] == "0123456789");
  CHECK(out[91] == "0123");  // 91 * 11 + 4 = 1005 bytes, the cut line delivered unterminated
}

TEST_CASE("the line splitter gives the same lines whatever the chunking", "[executor][output]") {
  std::string stream = "short\n" + std::string(kMaxLineBytes + 5, 'a') + "\n" +
                       std::string(kMaxLineBytes, 'b') + "\n\nend";
  Recorded whole, bytewise;
  LineSplitter a(Stream::kStdout), b(Stream::kStdout);
  a.feed(stream, whole);
  a.finish(whole);
  for (char c : stream) b.feed(std::string_view(&c, 1), bytewise);
  b.finish(bytewise);

  auto expected = std::vector<Piece>{
      {1, 5, false}, {2, kMaxLineBytes, true}, {2, 5, false}, {3, kMaxLineBytes, false},
      {4, 0, false}, {5, 3, false}};
  CHECK(pieces(whole.lines) == expected);
  CHECK(pieces(bytewise.lines) == expected);
}

}  // namespace
}  // namespace kbfleet::worker
