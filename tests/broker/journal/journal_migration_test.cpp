// Journal schema migrations (broker/journal/journal.cpp): version 2 adds the tenant column (issue
// #7), version 4 moves terminal states to `outcomes` (issue #6); a newer schema is refused.
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "broker/journal/journal.hpp"
#include "tests/support/process.hpp"

namespace kbfleet::broker {
namespace {

// Writes a journal as another broker version did: its schema and rows, by raw SQL.
void write_old_journal(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

std::vector<TaskRecord> load_all(Journal& j) {
  std::vector<TaskRecord> got;
  REQUIRE(j.load([&](TaskRecord&& r) { got.push_back(std::move(r)); }));
  return got;
}

}  // namespace

TEST_CASE("issue 7: a version-1 journal is migrated and its tasks belong to tenant default", "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  // The version-1 schema and one task, as a broker before issue #7 wrote them.
  write_old_journal(path,
      "CREATE TABLE tasks (id TEXT PRIMARY KEY NOT NULL, request BLOB NOT NULL, idempotency_key TEXT NOT NULL, "
      "state TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL, "
      "version TEXT NOT NULL, submitted_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT "
      "NULL, next_seq INTEGER NOT NULL, max_attempts INTEGER NOT NULL, retry_of TEXT NOT NULL, cancel_requested "
      "INTEGER NOT NULL, outcome BLOB NOT NULL, artifacts BLOB NOT NULL);"
      "INSERT INTO tasks VALUES ('old', x'80', '', 'queued', 0, '', '', '', 1, 0, 0, 1, 1, '', 0, x'', x'');"
      "PRAGMA user_version = 1;");
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(j.has_value());
  std::vector<TaskRecord> got = load_all(**j);
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == "old");
  CHECK(got[0].tenant == "default");
  // New records keep their tenant, and so do updates of migrated ones.
  TaskRecord fresh;
  fresh.id = "new";
  fresh.request = std::string("\x80", 1);
  fresh.state = "queued";
  fresh.tenant = "acme";
  REQUIRE((*j)->insert(fresh));
  got[0].state = "succeeded";
  got[0].finished_ms = 5;
  REQUIRE((*j)->update(got[0]));
  REQUIRE((*j)->commit());
  j->reset();
  auto again = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(again.has_value());
  got = load_all(**again);
  REQUIRE(got.size() == 2);
  CHECK(got[0].state == "succeeded");
  CHECK(got[0].tenant == "default");
  CHECK(got[1].tenant == "acme");
  again->reset();
  test::remove_tree(dir);
}

TEST_CASE("issue 6: a version-3 journal is migrated: finished tasks keep their outcome and compact as before",
          "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  // The version-3 schema (one row per task, rewritten on every transition, and the partial
  // index on finished_ms), as the broker before issue #6 wrote it.
  write_old_journal(path,
      "CREATE TABLE tasks (id TEXT NOT NULL, request BLOB NOT NULL, idempotency_key TEXT NOT NULL, "
      "state TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL, "
      "version TEXT NOT NULL, submitted_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT "
      "NULL, next_seq INTEGER NOT NULL, max_attempts INTEGER NOT NULL, retry_of TEXT NOT NULL, cancel_requested "
      "INTEGER NOT NULL, outcome BLOB NOT NULL, artifacts BLOB NOT NULL, tenant TEXT NOT NULL DEFAULT 'default');"
      "CREATE INDEX tasks_finished ON tasks(finished_ms) WHERE finished_ms > 0;"
      "INSERT INTO tasks VALUES ('late', x'80', '', 'succeeded', 1, '', 'w0', '1.0', 1, 2, 300, 4, 1, '', 0, "
      "x'81a57374617465a9737563636565646564', x'', 'acme');"
      "INSERT INTO tasks VALUES ('queued', x'80', 'k', 'queued', 0, '', '', '', 2, 0, 0, 1, 1, '', 0, x'', x'', "
      "'default');"
      "INSERT INTO tasks VALUES ('early', x'80', '', 'failed', 2, '', 'w1', '1.0', 3, 4, 100, 6, 2, '', 1, "
      "x'81a57374617465a66661696c6564', x'', 'default');"
      "INSERT INTO tasks VALUES ('running', x'80', '', 'running', 1, 'rid', 'w0', '1.0', 4, 5, 0, 3, 1, '', 0, x'', "
      "x'', 'default');"
      "PRAGMA user_version = 3;");
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(j.has_value());
  std::vector<TaskRecord> got = load_all(**j);
  REQUIRE(got.size() == 4);  // in submission order, each with the state it had
  CHECK(got[0].id == "late");
  CHECK(got[0].state == "succeeded");
  CHECK(got[0].finished_ms == 300);
  CHECK(got[0].tenant == "acme");
  CHECK(got[0].outcome == std::string("\x81\xa5state\xa9succeeded", 17));
  CHECK(got[1].id == "queued");
  CHECK(got[1].state == "queued");
  CHECK(got[1].idempotency_key == "k");
  CHECK(got[2].id == "early");
  CHECK(got[2].state == "failed");
  CHECK(got[2].attempt == 2);
  CHECK(got[2].cancel_requested);
  CHECK(got[3].id == "running");
  CHECK(got[3].worker == "rid");
  CHECK((*j)->ignored_outcomes() == 0);
  // Compaction deletes the migrated finished tasks in finish order, the earliest first.
  auto n = (*j)->compact(200, 100);
  REQUIRE(n.has_value());
  CHECK(*n == 1);
  REQUIRE((*j)->commit());
  j->reset();

  // Reopened (now version 4, no second migration): the rest is intact.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'tasks_finished'", -1, &s, nullptr) ==
          SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int(s, 0) == 0);  // the index the hot path maintained is gone
  sqlite3_finalize(s);
  sqlite3_close(db);
  auto again = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(again.has_value());
  got = load_all(**again);
  REQUIRE(got.size() == 3);
  CHECK(got[0].id == "late");
  CHECK(got[0].state == "succeeded");
  CHECK(got[1].id == "queued");
  CHECK(got[2].id == "running");
  again->reset();
  test::remove_tree(dir);
}

TEST_CASE("issue 6: a journal with a newer schema than the broker's is refused with IO_ERROR", "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  write_old_journal(path, "PRAGMA user_version = 5;");  // as a broker newer than this one left it
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE_FALSE(j.has_value());
  CHECK(j.error().code == ErrorCode::kIoError);
  CHECK(j.error().message.find("has schema version 5, newer than this broker's 4") != std::string::npos);
  test::remove_tree(dir);
}

}  // namespace kbfleet::broker
