// Journal schema migrations (broker/journal/schema.cpp): version 2 adds the tenant column (issue
// #7), version 4 moves terminal states to `outcomes` (issue #6); a newer schema is refused; each
// step commits with its version bump, and half-migrated journals of older brokers still open.
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "broker/journal/journal.hpp"
#include "tests/broker/journal/raw_sql.hpp"
#include "tests/support/process.hpp"

namespace kbfleet::broker {
namespace {

// A journal as another broker version wrote it: its schema and rows, by raw SQL.
void write_old_journal(const std::string& path, const std::string& sql) { raw_sql::exec(path, sql); }
std::int64_t scalar(const std::string& path, const char* sql) { return raw_sql::scalar(path, sql); }

// The version-1 table, as a broker before issue #7 created it.
constexpr const char* kTasksV1 =
    "CREATE TABLE tasks (id TEXT PRIMARY KEY NOT NULL, request BLOB NOT NULL, idempotency_key TEXT NOT NULL, "
    "state TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL, "
    "version TEXT NOT NULL, submitted_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT "
    "NULL, next_seq INTEGER NOT NULL, max_attempts INTEGER NOT NULL, retry_of TEXT NOT NULL, cancel_requested "
    "INTEGER NOT NULL, outcome BLOB NOT NULL, artifacts BLOB NOT NULL);"
    "CREATE INDEX tasks_finished ON tasks(finished_ms) WHERE finished_ms > 0;";

// The `tasks` table of versions 3 and 4 (every field a column, no primary key).
constexpr const char* kTasksV3 =
    "CREATE TABLE tasks (id TEXT NOT NULL, request BLOB NOT NULL, idempotency_key TEXT NOT NULL, "
    "state TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL, "
    "version TEXT NOT NULL, submitted_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT "
    "NULL, next_seq INTEGER NOT NULL, max_attempts INTEGER NOT NULL, retry_of TEXT NOT NULL, cancel_requested "
    "INTEGER NOT NULL, outcome BLOB NOT NULL, artifacts BLOB NOT NULL, tenant TEXT NOT NULL DEFAULT 'default');";

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
  write_old_journal(path, (std::string(kTasksV1) +
                           "INSERT INTO tasks VALUES ('old', x'80', '', 'queued', 0, '', '', '', 1, 0, 0, 1, 1, '', 0, "
                           "x'', x'');"
                           "PRAGMA user_version = 1;")
                              .c_str());
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
      std::string(kTasksV3) +
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

  // Reopened (now version 5, no second migration): the rest is intact.
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

TEST_CASE("issue 6: a version-4 journal is migrated: fields packed, outcomes kept in order, rowids kept",
          "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  // The version-4 schema, every field a column and one outcome row per finished task, as the
  // broker before schema 5 wrote it: a task finished at 300, one queued, one finished at 100 (its
  // outcome appended first), one running, and an outcome naming a row that holds another task.
  write_old_journal(path,
      std::string(kTasksV3) +
      "CREATE TABLE outcomes (task_row INTEGER NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT "
      "NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL, version TEXT NOT NULL, started_ms INTEGER NOT NULL, "
      "finished_ms INTEGER NOT NULL, next_seq INTEGER NOT NULL, max_attempts INTEGER NOT NULL, retry_of TEXT NOT "
      "NULL, cancel_requested INTEGER NOT NULL, outcome BLOB NOT NULL, artifacts BLOB NOT NULL);"
      "INSERT INTO tasks (rowid, id, request, idempotency_key, state, attempt, worker, worker_name, version, "
      "submitted_ms, started_ms, finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts, "
      "tenant) VALUES "
      "(3, 'late', x'80', '', 'running', 1, 'rid', 'w0', '1.0', 1, 2, 0, 3, 1, '', 0, x'', x'', 'acme'),"
      "(5, 'queued', x'80', 'k', 'queued', 0, '', '', '', 2, 0, 0, 1, 1, '', 0, x'', x'', 'default'),"
      "(8, 'early', x'80', '', 'running', 2, 'rid', 'w1', '1.0', 3, 4, 0, 5, 2, 'orig', 0, x'', x'', 'default'),"
      "(9, 'running', x'80', '', 'running', 1, 'rid', 'w0', '1.0', 4, 5, 0, 3, 1, '', 1, x'', x'', 'default');"
      "INSERT INTO outcomes VALUES (8, 'early', 'failed', 2, '', 'w1', '1.0', 4, 100, 6, 2, 'orig', 1, "
      "x'81a57374617465a66661696c6564', x'81');"
      "INSERT INTO outcomes VALUES (3, 'late', 'succeeded', 1, '', 'w0', '1.0', 2, 300, 4, 1, '', 0, "
      "x'81a57374617465a9737563636565646564', x'82');"
      "INSERT INTO outcomes VALUES (5, 'not-queued', 'succeeded', 1, '', 'w0', '1.0', 2, 300, 4, 1, '', 0, x'', x'');"
      "PRAGMA user_version = 4;");
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(j.has_value());
  std::vector<TaskRecord> got = load_all(**j);
  REQUIRE(got.size() == 4);  // in submission order, each with the state it had
  CHECK(got[0].id == "late");
  CHECK(got[0].row == 3);
  CHECK(got[0].state == "succeeded");
  CHECK(got[0].finished_ms == 300);
  CHECK(got[0].worker.empty());
  CHECK(got[0].tenant == "acme");
  CHECK(got[0].outcome == std::string("\x81\xa5state\xa9succeeded", 17));
  CHECK(got[0].artifacts == "\x82");
  CHECK(got[1].id == "queued");
  CHECK(got[1].state == "queued");  // the outcome naming another task is ignored
  CHECK(got[1].idempotency_key == "k");
  CHECK(got[2].id == "early");
  CHECK(got[2].state == "failed");
  CHECK(got[2].attempt == 2);
  CHECK(got[2].started_ms == 4);
  CHECK(got[2].next_seq == 6);
  CHECK(got[2].max_attempts == 2);
  CHECK(got[2].retry_of == "orig");
  CHECK(got[2].cancel_requested);
  CHECK(got[3].id == "running");
  CHECK(got[3].worker == "rid");
  CHECK(got[3].worker_name == "w0");
  CHECK(got[3].version == "1.0");
  CHECK(got[3].cancel_requested);
  CHECK((*j)->ignored_outcomes() == 1);
  // Compaction keeps the old finish order: the earliest outcome first.
  auto n = (*j)->compact(200, 100);
  REQUIRE(n.has_value());
  CHECK(*n == 1);
  REQUIRE((*j)->commit());
  j->reset();
  CHECK(scalar(path, "PRAGMA user_version") == 5);
  CHECK(scalar(path, "SELECT count(*) FROM pragma_table_info('tasks') WHERE name = 'state'") == 0);
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

TEST_CASE("issue 6: a version-1 journal whose tenant column was added before a crash, version not bumped, opens",
          "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  // What a broker before the one-transaction rule left when it died between its ALTER TABLE and
  // its version bump: the column is there, the version still says 1. It then failed every start
  // with "duplicate column name: tenant".
  write_old_journal(path, (std::string(kTasksV1) +
                           "INSERT INTO tasks VALUES ('old', x'80', '', 'succeeded', 1, '', 'w0', '1.0', 1, 2, 3, 4, 1, "
                           "'', 0, x'81', x'');"
                           "ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';"
                           "PRAGMA user_version = 1;")
                              .c_str());
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(j.has_value());
  std::vector<TaskRecord> got = load_all(**j);
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == "old");
  CHECK(got[0].tenant == "default");
  CHECK(got[0].state == "succeeded");
  CHECK(got[0].finished_ms == 3);
  j->reset();
  CHECK(scalar(path, "PRAGMA user_version") == 5);
  test::remove_tree(dir);
}

TEST_CASE("issue 6: a migration step that fails rolls back with its version bump, and the next start resumes there",
          "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  const std::string journal_v1 = std::string(kTasksV1) +
                                 "INSERT INTO tasks VALUES ('old', x'80', '', 'failed', 1, '', 'w0', '1.0', 1, 2, 3, 4, 1, "
                                 "'', 0, x'81', x'');";
  SECTION("the rebuild of version 2 fails: the journal stays at version 2, tenant column added once") {
    // A table in the way of the rebuild's rename makes the 2 -> 3 step fail after 1 -> 2 committed.
    write_old_journal(path, (journal_v1 + "CREATE TABLE tasks_old (x); PRAGMA user_version = 1;").c_str());
    auto failed = Journal::open({path, Durability::kBatch, 0});
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == ErrorCode::kIoError);
    CHECK(failed.error().message.find("tasks_old") != std::string::npos);
    failed = tl::unexpected(Error{});  // closes the journal
    CHECK(scalar(path, "PRAGMA user_version") == 2);
    CHECK(scalar(path, "SELECT count(*) FROM pragma_table_info('tasks') WHERE name = 'tenant'") == 1);
    CHECK(scalar(path, "SELECT count(*) FROM pragma_index_list('tasks') WHERE origin = 'pk'") == 1);  // not rebuilt
    write_old_journal(path, "DROP TABLE tasks_old;");
  }
  SECTION("the move to outcomes fails: the journal stays at version 3 with its index") {
    // An `outcomes` table without the columns makes the 3 -> 4 step fail after 1 -> 3 committed.
    write_old_journal(path, (journal_v1 + "CREATE TABLE outcomes (x); PRAGMA user_version = 1;").c_str());
    auto failed = Journal::open({path, Durability::kBatch, 0});
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == ErrorCode::kIoError);
    failed = tl::unexpected(Error{});
    CHECK(scalar(path, "PRAGMA user_version") == 3);
    CHECK(scalar(path, "SELECT count(*) FROM sqlite_master WHERE name = 'tasks_finished'") == 1);  // DROP rolled back
    CHECK(scalar(path, "SELECT count(*) FROM outcomes") == 0);
    write_old_journal(path, "DROP TABLE outcomes;");
  }
  SECTION("the packing of fields fails: the journal stays at version 4, every column as it was") {
    // A table in the way of the rename makes the 4 -> 5 step fail after 1 -> 4 committed.
    write_old_journal(path, (journal_v1 + "CREATE TABLE tasks_v4 (x); PRAGMA user_version = 1;").c_str());
    auto failed = Journal::open({path, Durability::kBatch, 0});
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == ErrorCode::kIoError);
    CHECK(failed.error().message.find("tasks_v4") != std::string::npos);
    failed = tl::unexpected(Error{});
    CHECK(scalar(path, "PRAGMA user_version") == 4);
    CHECK(scalar(path, "SELECT count(*) FROM pragma_table_info('tasks') WHERE name = 'state'") == 1);
    CHECK(scalar(path, "SELECT count(*) FROM pragma_table_info('outcomes') WHERE name = 'state'") == 1);
    CHECK(scalar(path, "SELECT count(*) FROM outcomes") == 1);
    write_old_journal(path, "DROP TABLE tasks_v4;");
  }
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(j.has_value());
  std::vector<TaskRecord> got = load_all(**j);
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == "old");
  CHECK(got[0].state == "failed");
  CHECK(got[0].tenant == "default");
  CHECK((*j)->ignored_outcomes() == 0);
  j->reset();
  CHECK(scalar(path, "PRAGMA user_version") == 5);
  CHECK(scalar(path, "SELECT count(*) FROM outcomes") == 1);
  test::remove_tree(dir);
}

TEST_CASE("issue 6: a journal left without a schema version is created again when empty and refused when it has tasks",
          "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  SECTION("empty version-1 tables, the version never set: replaced by this version's") {
    write_old_journal(path, kTasksV1);
    auto j = Journal::open({path, Durability::kBatch, 0});
    REQUIRE(j.has_value());
    TaskRecord r;
    r.id = "new";
    r.request = std::string("\x80", 1);
    r.state = "queued";
    r.tenant = "acme";
    REQUIRE((*j)->insert(r));
    REQUIRE((*j)->commit());
    std::vector<TaskRecord> got = load_all(**j);
    REQUIRE(got.size() == 1);
    CHECK(got[0].tenant == "acme");
  }
  SECTION("tasks without a version: refused, untouched") {
    write_old_journal(path, (std::string(kTasksV1) +
                             "INSERT INTO tasks VALUES ('x', x'80', '', 'queued', 0, '', '', '', 1, 0, 0, 1, 1, '', 0, "
                             "x'', x'');")
                                .c_str());
    auto j = Journal::open({path, Durability::kBatch, 0});
    REQUIRE_FALSE(j.has_value());
    CHECK(j.error().code == ErrorCode::kIoError);
    CHECK(j.error().message.find("has tasks but no schema version: not a kbfleet journal") != std::string::npos);
    j = tl::unexpected(Error{});
    CHECK(scalar(path, "SELECT count(*) FROM tasks") == 1);
  }
  test::remove_tree(dir);
}

TEST_CASE("issue 6: a journal with a newer schema than the broker's is refused with IO_ERROR", "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  write_old_journal(path, "PRAGMA user_version = 6;");  // as a broker newer than this one left it
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE_FALSE(j.has_value());
  CHECK(j.error().code == ErrorCode::kIoError);
  CHECK(j.error().message.find("has schema version 6, newer than this broker's 5") != std::string::npos);
  test::remove_tree(dir);
}

}  // namespace kbfleet::broker
