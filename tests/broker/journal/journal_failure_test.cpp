// The broker when its journal cannot be written (a full disk, simulated with SQLite's
// max_page_count): submissions are refused with IO_ERROR, nothing unjournalled is acknowledged,
// the tasks acknowledged before are kept and recovered by the next broker.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <thread>

#include "broker/broker.hpp"
#include "cli/client.hpp"
#include "common/protocol/messages.hpp"
#include "tests/support/process.hpp"

namespace kbfleet::broker {
namespace {

using namespace std::chrono_literals;

// A real broker on loopback, run by a thread of this process until destroyed.
class RunningBroker {
 public:
  explicit RunningBroker(const BrokerOptions& options) {
    auto b = Broker::create(options);
    REQUIRE(b.has_value());
    broker_ = std::move(*b);
    REQUIRE(::pipe2(stop_, O_CLOEXEC) == 0);
    thread_ = std::thread([this] { broker_->run(stop_[0]); });
  }
  ~RunningBroker() {
    (void)::write(stop_[1], "x", 1);
    thread_.join();
    ::close(stop_[0]);
    ::close(stop_[1]);
  }
  std::string endpoint() const { return broker_->endpoints().bind; }

 private:
  std::unique_ptr<Broker> broker_;
  int stop_[2] = {-1, -1};
  std::thread thread_;
};

BrokerOptions options_for(const std::string& data, std::int64_t max_pages) {
  BrokerOptions o;
  o.bind = "tcp://127.0.0.1:*";
  o.events = "tcp://127.0.0.1:*";
  o.metrics = "";
  o.data_dir = data;
  o.heartbeat_ms = 60000;  // no timer tick (and so no retry of the journal) during the test
  o.journal_max_pages = max_pages;
  return o;
}

Result<std::string> submit(cli::Client& c, const std::string& input_msgpack) {
  auto r = c.call(protocol::msg::kSubmit, [&](protocol::Writer& w) {
    w.kv("plugin", "noop").kv("handler", "ok").key("input").raw(input_msgpack);
  });
  if (!r) return tl::unexpected(r.error());
  return std::string(r->body.view().str_or("task_id", ""));
}

std::string state_of(cli::Client& c, const std::string& id) {
  auto r = c.call(protocol::msg::kStatus, [&](protocol::Writer& w) { w.kv("task_id", id); });
  if (!r) return r.error().to_string();
  auto task = r->body.view().map_or_none("task");
  return task && *task ? std::string((*task)->str_or("state", "")) : "";
}

}  // namespace

TEST_CASE("a journal that cannot be written refuses submissions with IO_ERROR and keeps what it acknowledged",
          "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  auto big = protocol::json_to_msgpack("\"" + std::string(100 << 10, 'x') + "\"");
  REQUIRE(big.has_value());
  std::vector<std::string> acked;
  {
    RunningBroker b(options_for(dir + "/data", /*max_pages=*/64));  // 256 KiB
    cli::Client c(b.endpoint(), 10s);
    std::optional<Error> refused;
    for (int i = 0; i < 20 && !refused; ++i) {
      auto id = submit(c, *big);
      if (id) acked.push_back(*id);
      else refused = id.error();
    }
    REQUIRE(refused.has_value());
    CHECK(refused->code == ErrorCode::kIoError);
    CHECK(refused->message.find("journal write failed") != std::string::npos);
    CHECK(refused->message.find("check disk space and permissions of --data") != std::string::npos);
    REQUIRE(!acked.empty());

    // While the journal fails, even a small task is refused; the broker keeps answering.
    auto small = submit(c, "");
    REQUIRE_FALSE(small.has_value());
    CHECK(small.error().code == ErrorCode::kIoError);
    for (const auto& id : acked) CHECK(state_of(c, id) == "queued");
  }
  {
    RunningBroker b(options_for(dir + "/data", 0));
    cli::Client c(b.endpoint(), 10s);
    for (const auto& id : acked) CHECK(state_of(c, id) == "queued");
    auto id = submit(c, "");
    CHECK(id.has_value());
  }
  test::remove_tree(dir);
}

}  // namespace kbfleet::broker
