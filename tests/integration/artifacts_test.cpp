// Artifact transfer (issue #6, scenario 6): a large artifact hashed while it is sent (sha256 in
// upload_end) and fetched through a window of requests, and the broker's checks of a hash that
// is declared only at the end. Real broker, real worker or a worker played over a real DEALER.
#include <chrono>
#include <filesystem>
#include <optional>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/hash/sha256.hpp"
#include "common/protocol/wire.hpp"
#include "common/transport/frames.hpp"
#include "tests/support/fleet.hpp"
#include "worker/artifacts/collect.hpp"

using namespace kbfleet::test;
using kbfleet::protocol::Writer;
using nlohmann::json;

namespace {

// A worker played by the test: a DEALER speaking the protocol through the real transport code.
class FakeWorker {
 public:
  explicit FakeWorker(const std::string& endpoint) : sock_(ctx_, zmq::socket_type::dealer) {
    REQUIRE(kbfleet::transport::connect_dealer(sock_, endpoint, "fake-worker"));
    Writer ready;
    ready.begin_map().kv("worker_id", "fake").kv("host", "test").kv("pid", 1).kv("slots", 1);
    ready.key("capabilities").begin_array().end_array().key("layers").begin_array().end_array();
    ready.key("plugins").begin_array().begin_map().kv("id", "noop").kv("version", "1.0.0");
    ready.kv_list("handlers", {"ok"}).key("capabilities").begin_array().end_array();
    ready.end_map().end_array().key("running").begin_array().end_array().end_map();
    send("ready", ready.take());
  }

  void send(std::string_view type, std::string body, std::string data = {}, bool with_data = false) {
    std::vector<zmq::message_t> frames;
    if (with_data) frames.emplace_back(data.data(), data.size());
    REQUIRE(kbfleet::transport::send_message(sock_, "", type, body, std::move(frames)));
  }

  // The next message of type `type` (others, such as heartbeats, are skipped); nullopt at the deadline.
  std::optional<kbfleet::transport::Incoming> next(std::string_view type, std::chrono::milliseconds deadline = 20s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      kbfleet::transport::Incoming in;
      while (kbfleet::transport::recv_message(sock_, kbfleet::transport::SocketKind::kDealer, in)) {
        REQUIRE_FALSE(in.error);
        if (in.type == type) return in;
      }
    }
    return std::nullopt;
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t sock_;
};

std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

std::size_t entries(const std::string& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

// The broker's writer thread removes an abandoned upload's temp file when it reaches it: wait for
// the directory to empty (bounded), then say whether it did.
bool empties(const std::string& dir) {
  return eventually([&] { return entries(dir) == 0; }, 10s);
}

// Submits a noop task that the fake worker (the only one) receives; returns its id.
std::string task_for_fake(const Fleet& fleet, FakeWorker& fake) {
  auto submitted = fleet.cli({"submit", "noop", "ok"});
  REQUIRE(submitted.exit_code == 0);
  const std::string id = trim(submitted.out);
  auto task = fake.next("task");
  REQUIRE(task);
  REQUIRE(task->body->view().str_or("task_id", "") == id);
  return id;
}

}  // namespace

TEST_CASE("an artifact larger than the hash-first limit is hashed while it is sent and fetched back intact",
          "[integration][artifacts]") {
  Fleet fleet({1, 1, {}});
  REQUIRE(fleet.wait_for_workers(1));
  // Over kHashFirstMaxBytes: upload_begin carries no hash, upload_end does; the fetch takes many
  // chunks through the CLI's window of requests.
  const int mib = static_cast<int>(kbfleet::worker::kHashFirstMaxBytes >> 20) + 3;
  auto run = fleet.cli({"submit", "big", "make", "--input", "{\"mib\":" + std::to_string(mib) + "}"});
  REQUIRE(run.exit_code == 0);
  const auto id = trim(run.out);
  REQUIRE(fleet.wait_for_terminal(id, 120s) == "succeeded");
  const std::string expected = kbfleet::hash::sha256_hex(std::string(static_cast<std::size_t>(mib) << 20, 'k'));
  auto arts = json::parse(fleet.cli({"artifacts", "ls", id, "--json"}).out);
  REQUIRE(arts.size() == 1);
  CHECK(arts[0]["sha256"] == expected);
  CHECK(arts[0]["size"] == std::int64_t{mib} << 20);

  const std::string out = fleet.dir + "/fetched.bin";
  auto get = fleet.cli({"artifacts", "get", id, "blob", "-o", out}, 120s);
  INFO(get.err);
  REQUIRE(get.exit_code == 0);
  CHECK(get.err.find("sha256 " + expected) != std::string::npos);
  CHECK(std::filesystem::file_size(out) == static_cast<std::uintmax_t>(mib) << 20);
  CHECK(kbfleet::hash::sha256_hex(read_file(out)) == expected);
  CHECK_FALSE(std::filesystem::exists(out + ".part"));

  auto durable = fleet.cli({"artifacts", "get", id, "blob", "-o", out + ".2", "--fsync"}, 120s);
  INFO(durable.err);
  REQUIRE(durable.exit_code == 0);
  CHECK(kbfleet::hash::sha256_hex(read_file(out + ".2")) == expected);
}

TEST_CASE("a hash declared only in upload_end is verified: the blob is stored only under the hash of its bytes",
          "[integration][artifacts]") {
  Fleet fleet({0, 1, {}});
  FakeWorker fake(fleet.broker);
  const std::string id = task_for_fake(fleet, fake);

  const std::string data = pattern((3 << 20) + 123);
  const std::string sha = kbfleet::hash::sha256_hex(data);
  Writer begin;
  begin.begin_map().kv("req", 1).kv("task_id", id).kv("attempt", 1).kv("name", "blob").kv("path", "out/blob");
  begin.kv("size", static_cast<std::int64_t>(data.size())).kv("sha256", "").kv("content_type", "application/x-test").end_map();
  fake.send("upload_begin", begin.take());
  auto ready = fake.next("upload_ready");
  REQUIRE(ready);
  CHECK_FALSE(ready->body->view().bool_or("have", true));  // no hash yet: nothing to deduplicate
  const std::string upload_id(ready->body->view().str_or("upload_id", ""));
  REQUIRE_FALSE(upload_id.empty());
  const std::int64_t chunk = ready->body->view().i64_or("chunk_bytes", 0);
  const std::int64_t window = ready->body->view().i64_or("window", 0);
  REQUIRE(chunk >= 4096);
  REQUIRE(window >= 1);
  // Flow control as a worker does it: at most `window` chunks unacknowledged.
  std::int64_t sent = 0, acked = 0;
  const auto size = static_cast<std::int64_t>(data.size());
  while (acked < size) {
    while (sent < size && sent - acked < window * chunk) {
      const auto n = std::min(chunk, size - sent);
      Writer w;
      w.begin_map().kv("req", 2).kv("upload_id", upload_id).kv("offset", sent).end_map();
      fake.send("upload_chunk", w.take(), data.substr(static_cast<std::size_t>(sent), static_cast<std::size_t>(n)), true);
      sent += n;
    }
    auto ack = fake.next("upload_ack");
    REQUIRE(ack);
    acked = std::max(acked, ack->body->view().i64_or("received", 0));
  }
  const std::string tmp_dir = fleet.dir + "/data/cas/tmp";
  auto end_with = [&](std::optional<std::string> declared) {
    Writer w;
    w.begin_map().kv("req", 3).kv("upload_id", upload_id);
    if (declared) w.kv("sha256", *declared);
    w.end_map();
    fake.send("upload_end", w.take());
    auto done = fake.next("upload_done");
    REQUIRE(done);
    return std::move(*done);
  };
  auto artifacts = [&] { return json::parse(fleet.cli({"artifacts", "ls", id, "--json"}).out); };

  SECTION("the right hash: stored under it and recorded for the task") {
    auto done = end_with(sha);
    CHECK(done.body->view().bool_or("ok", false));
    auto arts = artifacts();
    REQUIRE(arts.size() == 1);
    CHECK(arts[0]["sha256"] == sha);
    CHECK(arts[0]["content_type"] == "application/x-test");
    CHECK(std::filesystem::file_size(fleet.dir + "/data/cas/sha256/" + sha.substr(0, 2) + "/" + sha) == data.size());
  }
  SECTION("another hash: HASH_MISMATCH naming it, nothing stored or recorded") {
    const std::string other = kbfleet::hash::sha256_hex("not these bytes");
    auto done = end_with(other);
    CHECK_FALSE(done.body->view().bool_or("ok", true));
    auto err = done.body->view().map_or_none("error");
    REQUIRE(err);
    REQUIRE(*err);
    CHECK((*err)->str_or("code", "") == "HASH_MISMATCH");
    CHECK(std::string((*err)->str_or("message", "")).find(other) != std::string::npos);
    CHECK(artifacts().empty());
    CHECK_FALSE(std::filesystem::exists(fleet.dir + "/data/cas/sha256/" + other.substr(0, 2) + "/" + other));
  }
  SECTION("no hash at all, or one that is not 64 lowercase hex: INVALID_ARGUMENT, nothing stored") {
    auto done = GENERATE(as<std::optional<std::string>>{}, std::nullopt, std::string("../../etc/passwd"));
    auto reply = end_with(done);
    CHECK_FALSE(reply.body->view().bool_or("ok", true));
    auto err = reply.body->view().map_or_none("error");
    REQUIRE(err);
    REQUIRE(*err);
    CHECK((*err)->str_or("code", "") == "INVALID_ARGUMENT");
    CHECK(artifacts().empty());
  }
  CHECK(empties(tmp_dir));
}

TEST_CASE("a chunk larger than chunk_bytes or at the wrong offset ends the upload with its error, and nothing is stored",
          "[integration][artifacts]") {
  Fleet fleet({0, 1, {}});
  FakeWorker fake(fleet.broker);
  const std::string id = task_for_fake(fleet, fake);

  const std::string data = pattern((2 << 20) + 1);
  Writer begin;
  begin.begin_map().kv("req", 1).kv("task_id", id).kv("attempt", 1).kv("name", "blob").kv("path", "out/blob");
  begin.kv("size", static_cast<std::int64_t>(data.size())).kv("sha256", kbfleet::hash::sha256_hex(data));
  begin.kv("content_type", "application/x-test").end_map();
  fake.send("upload_begin", begin.take());
  auto ready = fake.next("upload_ready");
  REQUIRE(ready);
  const std::string upload_id(ready->body->view().str_or("upload_id", ""));
  const std::int64_t chunk = ready->body->view().i64_or("chunk_bytes", 0);
  REQUIRE(chunk > 0);
  REQUIRE(chunk < static_cast<std::int64_t>(data.size()));

  struct Case {
    std::int64_t offset;
    std::size_t bytes;
    std::string code;
    std::string says;
  };
  const auto c = GENERATE_COPY(Case{0, static_cast<std::size_t>(chunk) + 1, "INVALID_ARGUMENT", "chunk_bytes"},
                               Case{4096, 4096, "INVALID_ARGUMENT", "expected offset 0"});
  Writer w;
  w.begin_map().kv("req", 2).kv("upload_id", upload_id).kv("offset", c.offset).end_map();
  fake.send("upload_chunk", w.take(), data.substr(0, c.bytes), true);
  auto done = fake.next("upload_done");
  REQUIRE(done);
  CHECK_FALSE(done->body->view().bool_or("ok", true));
  auto err = done->body->view().map_or_none("error");
  REQUIRE(err);
  REQUIRE(*err);
  CHECK((*err)->str_or("code", "") == c.code);
  CHECK(std::string((*err)->str_or("message", "")).find(c.says) != std::string::npos);
  // The upload is gone: a further chunk is for an unknown upload.
  Writer again;
  again.begin_map().kv("req", 3).kv("upload_id", upload_id).kv("offset", 0).end_map();
  fake.send("upload_chunk", again.take(), data.substr(0, 4096), true);
  auto unknown = fake.next("error");
  REQUIRE(unknown);
  CHECK(unknown->body->view().str_or("code", "") == "ARTIFACT_UPLOAD_FAILED");
  CHECK(json::parse(fleet.cli({"artifacts", "ls", id, "--json"}).out).empty());
  CHECK(empties(fleet.dir + "/data/cas/tmp"));
}
