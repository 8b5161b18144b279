// Journal: durable records, crash cases (uncommitted writes lost, committed ones kept across a
// SIGKILL), compaction, a full disk, a foreign file (broker/journal/journal.hpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "broker/journal/journal.hpp"
#include "tests/broker/journal/raw_sql.hpp"
#include "tests/support/process.hpp"

namespace kbfleet::broker {
namespace {

struct TempDir {
  std::string path = test::make_temp_dir();
  ~TempDir() { test::remove_tree(path); }
};

TaskRecord record(int n, std::string state = "queued") {
  TaskRecord r;
  r.id = "task-" + std::to_string(n);
  r.request = std::string("\x81\xa6plugin\xa5hello", 14);
  r.idempotency_key = n % 2 ? "key-" + std::to_string(n) : "";
  r.state = std::move(state);
  r.submitted_ms = 1000 + n;
  return r;
}

std::unique_ptr<Journal> open_journal(const std::string& dir, std::int64_t max_pages = 0) {
  auto j = Journal::open({dir + "/journal.db", Durability::kBatch, max_pages});
  REQUIRE(j.has_value());
  return std::move(*j);
}

std::vector<TaskRecord> load_all(Journal& j) {
  std::vector<TaskRecord> out;
  REQUIRE(j.load([&](TaskRecord&& r) { out.push_back(std::move(r)); }).has_value());
  return out;
}

}  // namespace

TEST_CASE("committed records are read back in submission order after reopening", "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path);
    for (int i = 0; i < 5; ++i) REQUIRE(j->insert(record(i)).has_value());
    CHECK(j->pending_records() == 5);
    REQUIRE(j->commit().has_value());
    CHECK(j->pending_records() == 0);
  }
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(all[static_cast<std::size_t>(i)].id == "task-" + std::to_string(i));
    CHECK(all[static_cast<std::size_t>(i)].request == record(i).request);
    CHECK(all[static_cast<std::size_t>(i)].idempotency_key == record(i).idempotency_key);
    CHECK(all[static_cast<std::size_t>(i)].submitted_ms == 1000 + i);
  }
}

TEST_CASE("update rewrites a task's state, attempt, worker, outcome and artifacts", "[broker][journal]") {
  TempDir dir;
  auto j = open_journal(dir.path);
  auto row = j->insert(record(1));
  REQUIRE(row.has_value());
  TaskRecord r = record(1);
  r.row = *row;
  r.state = "succeeded";
  r.attempt = 2;
  r.worker = "w0";
  r.worker_name = "w0";
  r.version = "1.0.0";
  r.started_ms = 5;
  r.finished_ms = 9;
  r.next_seq = 7;
  r.max_attempts = 3;
  r.retry_of = "task-0";
  r.cancel_requested = true;
  r.outcome = std::string("\x81\xa5state\xa9succeeded", 17);
  r.artifacts = std::string("\x81\xa9" "artifacts\x90", 12);
  r.request = "ignored by update";
  REQUIRE(j->update(r).has_value());
  REQUIRE(j->commit().has_value());
  auto all = load_all(*j);
  REQUIRE(all.size() == 1);
  const auto& got = all[0];
  CHECK(got.state == "succeeded");
  CHECK(got.attempt == 2);
  CHECK(got.worker == "w0");
  CHECK(got.version == "1.0.0");
  CHECK(got.finished_ms == 9);
  CHECK(got.next_seq == 7);
  CHECK(got.max_attempts == 3);
  CHECK(got.retry_of == "task-0");
  CHECK(got.cancel_requested);
  CHECK(got.outcome == r.outcome);
  CHECK(got.artifacts == r.artifacts);
  CHECK(got.request == record(1).request);  // the request is written once, at insert
  r.row = *row + 1;  // rows are found by rowid; one that holds another task (or none) is an error
  r.state = "running";
  r.finished_ms = 0;
  CHECK_FALSE(j->update(r).has_value());
}

TEST_CASE("issue 6: an outcome written for a row that holds another task is ignored on load", "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path);
    REQUIRE(j->insert(record(1)).has_value());
    auto second = j->insert(record(2));
    REQUIRE(second.has_value());
    TaskRecord wrong = record(1, "succeeded");  // task 1's outcome, but with task 2's row
    wrong.row = *second;
    wrong.finished_ms = 9;
    REQUIRE(j->update(wrong).has_value());
    wrong.row = *second + 10;  // and one for a row that holds no task
    REQUIRE(j->update(wrong).has_value());
    REQUIRE(j->commit().has_value());
  }
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 2);
  CHECK(all[0].state == "queued");  // neither task is finished by an outcome that is not its own
  CHECK(all[1].state == "queued");
  CHECK(j->ignored_outcomes() == 2);
}

TEST_CASE("issue 6: a finished task's outcome is appended, not rewritten, and wins over its row on load",
          "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path);
    auto row = j->insert(record(1));
    REQUIRE(row.has_value());
    REQUIRE(j->commit().has_value());
    TaskRecord running = record(1, "running");
    running.row = *row;
    running.attempt = 1;
    running.worker = "w0";
    REQUIRE(j->update(running).has_value());  // a non-terminal transition rewrites the row
    REQUIRE(j->commit().has_value());
    TaskRecord done = running;
    done.state = "failed";
    done.worker.clear();
    done.finished_ms = 20;
    done.next_seq = 5;
    done.outcome = std::string("\x81\xa5state\xa6" "failed", 14);
    REQUIRE(j->update(done).has_value());
    REQUIRE(j->commit().has_value());
  }
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 1);
  CHECK(all[0].state == "failed");
  CHECK(all[0].attempt == 1);
  CHECK(all[0].worker.empty());
  CHECK(all[0].finished_ms == 20);
  CHECK(all[0].next_seq == 5);
  CHECK(all[0].outcome == std::string("\x81\xa5state\xa6" "failed", 14));
  CHECK(all[0].request == record(1).request);
  CHECK(all[0].submitted_ms == record(1).submitted_ms);
  CHECK(j->ignored_outcomes() == 0);
}

TEST_CASE("issue 6: compaction stops at the first outcome finished after the bound", "[broker][journal]") {
  // Outcomes are deleted as a prefix in commit order: one finished out of clock order waits.
  TempDir dir;
  auto j = open_journal(dir.path);
  for (int ms : {100, 300, 200}) {
    TaskRecord r = record(ms, "succeeded");
    r.finished_ms = ms;
    REQUIRE(j->insert(r).has_value());
    REQUIRE(j->commit().has_value());  // a commit each: one outcome row each
  }
  auto n = j->compact(250, 100);
  REQUIRE(n.has_value());
  CHECK(*n == 1);
  REQUIRE(j->commit().has_value());
  auto all = load_all(*j);
  REQUIRE(all.size() == 2);
  CHECK(all[0].finished_ms == 300);
  CHECK(all[1].finished_ms == 200);
  n = j->compact(300, 100);
  REQUIRE(n.has_value());
  CHECK(*n == 2);
  REQUIRE(j->commit().has_value());
  CHECK(load_all(*j).empty());
  CHECK(j->compact(1000, 100).value() == 0);
  CHECK(j->pending_records() == 0);  // nothing to delete opens no transaction
}

TEST_CASE("writes not yet committed are lost when the journal closes, as in a crash", "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path);
    auto row = j->insert(record(1));
    REQUIRE(row.has_value());
    REQUIRE(j->commit().has_value());
    REQUIRE(j->insert(record(2)).has_value());
    TaskRecord done = record(1, "succeeded");
    done.row = *row;
    done.finished_ms = 10;
    REQUIRE(j->update(done).has_value());
  }  // closed without commit
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == "task-1");
  CHECK(all[0].state == "queued");
}

TEST_CASE("a process killed by SIGKILL keeps every commit it made and none of the rest", "[broker][journal]") {
  TempDir dir;
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child must not run Catch2 or destructors: it writes, commits, writes more, dies.
    auto j = Journal::open({dir.path + "/journal.db", Durability::kBatch, 0});
    if (!j) ::_exit(10);
    for (int i = 0; i < 100; ++i) {
      if (!(*j)->insert(record(i))) ::_exit(11);
      if (i % 10 == 9 && !(*j)->commit()) ::_exit(12);
    }
    for (int i = 100; i < 105; ++i) (void)(*j)->insert(record(i));
    ::raise(SIGKILL);
    ::_exit(13);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 100);
  CHECK(all.front().id == "task-0");
  CHECK(all.back().id == "task-99");
}

TEST_CASE("issue 6: commits racing the checkpoint thread all survive a SIGKILL, and the journal stays whole",
          "[broker][journal]") {
  // The child commits without pause while asking for checkpoints (run on the journal's thread,
  // beside the commits) and copying their tails as the broker does, and reports over a pipe each
  // commit that returned. It is killed while doing so: every reported commit must load back, and
  // SQLite's integrity check must pass.
  TempDir dir;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto j = Journal::open({dir.path + "/journal.db", Durability::kBatch, 0});
    if (!j) ::_exit(10);
    for (int i = 0;; ++i) {
      auto row = (*j)->insert(record(i));
      if (!row) ::_exit(11);
      TaskRecord done = record(i, "succeeded");
      done.row = *row;
      done.finished_ms = 5000 + i;
      if (!(*j)->update(done) || !(*j)->commit()) ::_exit(12);
      if (i % 50 == 0 && !(*j)->checkpoint_passive()) ::_exit(13);
      if (!(*j)->finish_checkpoint()) ::_exit(14);
      // The pass count too: the parent kills only after checkpoints have run beside commits.
      const std::int64_t msg[2] = {i, static_cast<std::int64_t>((*j)->checkpoint_passes())};
      if (::write(fds[1], msg, sizeof msg) != sizeof msg) ::_exit(15);
    }
  }
  ::close(fds[1]);
  std::int64_t msg[2] = {-1, 0};
  std::int64_t last = -1;
  while (::read(fds[0], msg, sizeof msg) == sizeof msg) {
    last = msg[0];
    if (msg[1] >= 3 && last >= 2000) break;
  }
  REQUIRE(::kill(pid, SIGKILL) == 0);
  // Commits reported after the one we saw are durable too; drain them before counting.
  while (::read(fds[0], msg, sizeof msg) == sizeof msg) last = msg[0];
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(last >= 2000);

  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(static_cast<std::int64_t>(all.size()) >= last + 1);
  for (std::int64_t i = 0; i <= last; ++i) {
    CHECK(all[static_cast<std::size_t>(i)].id == "task-" + std::to_string(i));
    CHECK(all[static_cast<std::size_t>(i)].state == "succeeded");
  }
  CHECK(j->ignored_outcomes() == 0);
  sqlite3* db = nullptr;
  j.reset();
  REQUIRE(sqlite3_open_v2((dir.path + "/journal.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* check = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &check, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(check) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(check, 0))) == "ok");
  sqlite3_finalize(check);
  sqlite3_close_v2(db);
}

TEST_CASE("issue 6: checkpoints run on the journal's thread and the WAL restarts from its start under load",
          "[broker][journal]") {
  // Without the loop-side tail the WAL would never be fully copied while commits continue, and
  // would grow without bound.
  TempDir dir;
  auto j = open_journal(dir.path);
  REQUIRE(j->insert(record(0)).has_value());
  REQUIRE(j->commit().has_value());
  // The WAL header's checkpoint sequence number (bytes 12-15) grows by one at each restart.
  const int wal = ::open((dir.path + "/journal.db-wal").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(wal >= 0);
  auto sequence = [&] {
    unsigned char b[4] = {};
    REQUIRE(::pread(wal, b, sizeof b, 12) == 4);
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
  };
  const std::uint32_t first = sequence();
  std::uint64_t asked_at = 0;
  int restarts = 0;
  for (int i = 1; i < 50000 && restarts < 3; ++i) {
    REQUIRE(j->insert(record(i)).has_value());
    REQUIRE(j->commit().has_value());
    if (j->checkpoint_passes() == asked_at) {  // the next pass as soon as the last one is done
      auto st = j->checkpoint_passive();
      INFO((st ? std::string() : st.error().message));
      REQUIRE(st.has_value());
      ++asked_at;
    }
    REQUIRE(j->finish_checkpoint().has_value());
    restarts = static_cast<int>(sequence() - first);
  }
  ::close(wal);
  CHECK(j->checkpoint_passes() >= 3);
  CHECK(restarts >= 3);
}

TEST_CASE("compaction deletes finished tasks older than the retention, in bounded batches", "[broker][journal]") {
  TempDir dir;
  auto j = open_journal(dir.path);
  for (int i = 1; i <= 10; ++i) {
    TaskRecord r = record(i, "succeeded");
    r.finished_ms = i * 100;
    REQUIRE(j->insert(r).has_value());
    REQUIRE(j->commit().has_value());  // a commit each: one outcome row each
  }
  for (int i = 11; i <= 13; ++i) REQUIRE(j->insert(record(i)).has_value());  // unfinished
  REQUIRE(j->commit().has_value());

  auto first = j->compact(500, 2);
  REQUIRE(first.has_value());
  CHECK(*first == 2);
  auto rest = j->compact(500, 100);
  REQUIRE(rest.has_value());
  CHECK(*rest == 3);
  REQUIRE(j->commit().has_value());
  auto all = load_all(*j);
  REQUIRE(all.size() == 8);
  for (const auto& r : all) CHECK((r.finished_ms == 0 || r.finished_ms > 500));
}

TEST_CASE("issue 6: a record of views with empty strings is stored as empty strings and not as NULLs", "[broker][journal]") {
  // The broker writes records that view its tasks' strings; an empty std::string_view may have no
  // data pointer, which SQLite would bind as NULL and the NOT NULL columns would refuse.
  TempDir dir;
  auto j = open_journal(dir.path);
  TaskRecordRef r;
  r.id = "task-views";
  r.request = std::string_view("\x80", 1);
  r.state = "queued";
  r.tenant = "default";
  REQUIRE(r.idempotency_key.data() == nullptr);
  auto row = j->insert(r);
  REQUIRE(row.has_value());
  r.row = *row;
  r.state = "succeeded";
  r.finished_ms = 7;
  REQUIRE(j->update(r).has_value());
  REQUIRE(j->commit().has_value());
  auto all = load_all(*j);
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == "task-views");
  CHECK(all[0].idempotency_key.empty());
  CHECK(all[0].state == "succeeded");
  CHECK(all[0].worker.empty());
  CHECK(all[0].outcome.empty());
}

TEST_CASE("issue 6: the tasks finished in one commit are one outcome row, loaded and compacted together",
          "[broker][journal]") {
  TempDir dir;
  auto j = open_journal(dir.path);
  std::vector<TaskRecord> tasks;
  for (int i = 1; i <= 5; ++i) {
    tasks.push_back(record(i, "running"));
    auto row = j->insert(tasks.back());
    REQUIRE(row.has_value());
    tasks.back().row = *row;
  }
  REQUIRE(j->commit().has_value());
  for (int i : {0, 2, 3}) {  // three finish in one turn
    tasks[i].state = "succeeded";
    tasks[i].finished_ms = 100 + i;
    tasks[i].outcome = "\x81\xa1x" + std::to_string(i);
    REQUIRE(j->update(tasks[i]).has_value());
  }
  REQUIRE(j->commit().has_value());
  tasks[1].state = "failed";  // one in the next
  tasks[1].finished_ms = 900;
  REQUIRE(j->update(tasks[1]).has_value());
  REQUIRE(j->commit().has_value());
  j.reset();
  CHECK(raw_sql::scalar(dir.path + "/journal.db", "SELECT count(*) FROM outcomes") == 2);
  j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 5);
  for (int i : {0, 2, 3}) {
    CHECK(all[i].state == "succeeded");
    CHECK(all[i].finished_ms == 100 + i);
    CHECK(all[i].outcome == "\x81\xa1x" + std::to_string(i));
  }
  CHECK(all[1].state == "failed");
  CHECK(all[4].state == "running");
  // The first commit's three go together, even with a limit of one; the later one stays.
  auto n = j->compact(500, 1);
  REQUIRE(n.has_value());
  CHECK(*n == 3);
  REQUIRE(j->commit().has_value());
  all = load_all(*j);
  REQUIRE(all.size() == 2);
  CHECK(all[0].state == "failed");
  CHECK(all[1].state == "running");
}

TEST_CASE("issue 6: a journal row whose fields are damaged is an IO_ERROR naming the row, not a crash",
          "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path);
    REQUIRE(j->insert(record(1)).has_value());
    REQUIRE(j->commit().has_value());
  }
  const std::string path = dir.path + "/journal.db";
  for (const char* damage : {"x'93a1780102'", "x'dd7fffffff'", "x''", "'queued'"}) {
    INFO(damage);
    raw_sql::exec(path, std::string("UPDATE tasks SET fields = ") + damage);
    auto j = Journal::open({path, Durability::kBatch, 0});
    REQUIRE(j.has_value());
    std::size_t loaded = 0;
    auto st = (*j)->load([&](TaskRecord&&) { ++loaded; });
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().code == ErrorCode::kIoError);
    CHECK(st.error().message.find("task row 1") != std::string::npos);
    CHECK(st.error().message.find("move it away to start empty") != std::string::npos);  // what to do
    CHECK(loaded == 0);
  }
}

TEST_CASE("issue 6: a damaged outcome batch is an IO_ERROR naming the batch and the journal opens again once it is removed",
          "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path);
    TaskRecord r = record(1, "succeeded");
    r.finished_ms = 5;
    REQUIRE(j->insert(r).has_value());
    REQUIRE(j->insert(record(2)).has_value());
    REQUIRE(j->commit().has_value());
  }
  const std::string path = dir.path + "/journal.db";
  for (const char* damage : {"x'91c0'", "x'dd7fffffff'", "x'919301a178'"}) {
    INFO(damage);
    raw_sql::exec(path, std::string("UPDATE outcomes SET records = ") + damage);
    auto j = Journal::open({path, Durability::kBatch, 0});
    REQUIRE(j.has_value());
    std::size_t loaded = 0;
    auto st = (*j)->load([&](TaskRecord&&) { ++loaded; });
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().code == ErrorCode::kIoError);
    CHECK(st.error().message.find("outcome batch 1") != std::string::npos);
    CHECK(st.error().message.find("move it away to start empty") != std::string::npos);
    CHECK(loaded == 0);
  }
  raw_sql::exec(path, "DELETE FROM outcomes");  // an operator giving up the damaged outcomes
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(all.size() == 2);
  CHECK(all[0].state == "succeeded");  // the row's own copy of the fields (written at insert)
  CHECK(all[1].state == "queued");
}

TEST_CASE("a second broker on the same journal is refused while the first holds it", "[broker][journal]") {
  TempDir dir;
  auto first = open_journal(dir.path);
  REQUIRE(first->insert(record(1)).has_value());
  REQUIRE(first->commit().has_value());
  auto second = Journal::open({dir.path + "/journal.db", Durability::kBatch, 0});
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().code == ErrorCode::kIoError);
  CHECK(second.error().message.find("another kbfleet-broker") != std::string::npos);
}

TEST_CASE("a full disk is an IO_ERROR that loses only the uncommitted batch", "[broker][journal]") {
  TempDir dir;
  {
    auto j = open_journal(dir.path, /*max_pages=*/64);
    REQUIRE(j->insert(record(0)).has_value());
    REQUIRE(j->commit().has_value());
    Status st;
    TaskRecord big = record(1);
    big.request.assign(64 << 10, 'x');
    for (int i = 1; i < 100 && st; ++i) {
      big.id = "big-" + std::to_string(i);
      auto row = j->insert(big);
      st = row ? j->commit() : Status(tl::unexpected(row.error()));
    }
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().code == ErrorCode::kIoError);
    CHECK(st.error().message.find("full") != std::string::npos);
    j->rollback();
    CHECK(j->pending_records() == 0);
  }
  auto j = open_journal(dir.path);
  auto all = load_all(*j);
  REQUIRE(!all.empty());
  CHECK(all[0].id == "task-0");
}

TEST_CASE("a file that is not a journal is refused with IO_ERROR naming it", "[broker][journal]") {
  TempDir dir;
  std::ofstream(dir.path + "/journal.db") << std::string(4096, 'z');
  auto j = Journal::open({dir.path + "/journal.db", Durability::kFsync, 0});
  REQUIRE_FALSE(j.has_value());
  CHECK(j.error().code == ErrorCode::kIoError);
  CHECK(j.error().message.find(dir.path + "/journal.db") != std::string::npos);
}

TEST_CASE("the durability option accepts none, batch and fsync only", "[broker][journal]") {
  CHECK(*parse_durability("none") == Durability::kNone);
  CHECK(*parse_durability("batch") == Durability::kBatch);
  CHECK(*parse_durability("fsync") == Durability::kFsync);
  auto bad = parse_durability("sometimes");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("none, batch or fsync") != std::string::npos);
}

}  // namespace kbfleet::broker
