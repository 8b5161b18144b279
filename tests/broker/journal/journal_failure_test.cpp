// The broker when its journal cannot be written (a full disk, simulated with SQLite's
// max_page_count): submissions are refused with IO_ERROR, nothing unjournalled is acknowledged,
// the tasks acknowledged before are kept and recovered by the next broker.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

namespace kbfleet::broker {
namespace {

// Lets this process write files only up to `bytes` (RLIMIT_FSIZE) while it lives: a write past it
// fails with EFBIG. SIGXFSZ, which would kill the process, is ignored meanwhile.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = saved_;
    lim.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t old_handler_ = SIG_DFL;
};

}  // namespace

TEST_CASE("a journal commit that fails answers that turn's submitters IO_ERROR and loses no acknowledged task",
          "[broker][journal]") {
  // The insert of a new task only touches SQLite's page cache; it is the commit that appends the
  // pages to the WAL. With the WAL unable to grow, the commit fails, the turn is rolled back, and
  // the task created in it must be refused, not acknowledged and then lost.
  const std::string dir = test::make_temp_dir();
  auto big = protocol::json_to_msgpack("\"" + std::string(200 << 10, 'x') + "\"");
  REQUIRE(big.has_value());
  std::string first;
  {
    RunningBroker b(options_for(dir + "/data", 0));
    cli::Client c(b.endpoint(), 10s);
    auto id = submit(c, *big);
    REQUIRE(id.has_value());
    first = *id;
    struct stat wal {};
    REQUIRE(::stat((dir + "/data/journal.db-wal").c_str(), &wal) == 0);
    REQUIRE(wal.st_size > (200 << 10));
    // Half the WAL, not all of it: the checkpoint thread (asked at the broker's first timer turn)
    // may have copied the first task by now, and the next commit then restarts the WAL at its
    // start, where a limit of the whole WAL would let the same-sized task fit. Either way the
    // second task's frames must reach past the middle of the WAL, which the limit forbids.
    FileSizeLimit limit(static_cast<rlim_t>(wal.st_size / 2));
    auto refused = submit(c, *big);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == ErrorCode::kIoError);
    INFO(refused.error().message);
    CHECK(refused.error().message.find("journal write failed") != std::string::npos);
    CHECK(refused.error().message.find("COMMIT") != std::string::npos);  // the commit failed, not the insert
    CHECK(state_of(c, first) == "queued");
  }
  {
    RunningBroker b(options_for(dir + "/data", 0));
    cli::Client c(b.endpoint(), 10s);
    CHECK(state_of(c, first) == "queued");
  }
  // What the journal holds: the acknowledged task, and nothing of the refused one.
  auto journal = Journal::open({dir + "/data/journal.db", Durability::kBatch, 0});
  REQUIRE(journal.has_value());
  std::vector<std::string> ids;
  REQUIRE((*journal)->load([&](TaskRecord&& r) { ids.push_back(r.id); }).has_value());
  CHECK(ids == std::vector<std::string>{first});
  journal->reset();
  test::remove_tree(dir);
}

}  // namespace kbfleet::broker
