#include "broker/journal/schema.hpp"

#include <sqlite3.h>

#include <functional>
#include <memory>

#include "broker/journal/fields.hpp"
#include "broker/journal/sqlite_values.hpp"

namespace kbfleet::broker::journal_schema {
namespace {

// `tasks` (version 5): one row per task, written at acceptance and rewritten by non-terminal
// transitions. `rowid` keeps insertion order, which recovery uses to requeue tasks in their
// original submission order. `fields`: what transitions change, journal_fields::encode().
constexpr const char* kTasksTable = R"sql(
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT NOT NULL,
  request BLOB NOT NULL,
  idempotency_key TEXT NOT NULL,
  submitted_ms INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  fields BLOB NOT NULL);
)sql";
// `outcomes` (version 5): one row per commit that finished tasks, appended (terminal states are
// final): `records` is a journal_fields::OutcomeBatch, `finished_ms` its latest finish. On load
// an entry overrides its task's row. Appending in commit order keeps the write on the table's
// rightmost page and makes compaction a scan from its start, with no index to maintain.
constexpr const char* kOutcomesTable = R"sql(
CREATE TABLE IF NOT EXISTS outcomes (
  finished_ms INTEGER NOT NULL,
  records BLOB NOT NULL);
)sql";

// `tasks` (versions 3 and 4): every field a column.
constexpr const char* kTasksTableV4 = R"sql(
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT NOT NULL,
  request BLOB NOT NULL,
  idempotency_key TEXT NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  worker TEXT NOT NULL,
  worker_name TEXT NOT NULL,
  version TEXT NOT NULL,
  submitted_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER NOT NULL,
  next_seq INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  retry_of TEXT NOT NULL,
  cancel_requested INTEGER NOT NULL,
  outcome BLOB NOT NULL,
  artifacts BLOB NOT NULL,
  tenant TEXT NOT NULL DEFAULT 'default');
)sql";
// `outcomes` (version 4): a task's terminal state, one row per finished task, every field a column.
constexpr const char* kOutcomesTableV4 = R"sql(
CREATE TABLE IF NOT EXISTS outcomes (
  task_row INTEGER NOT NULL,
  id TEXT NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  worker TEXT NOT NULL,
  worker_name TEXT NOT NULL,
  version TEXT NOT NULL,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER NOT NULL,
  next_seq INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  retry_of TEXT NOT NULL,
  cancel_requested INTEGER NOT NULL,
  outcome BLOB NOT NULL,
  artifacts BLOB NOT NULL);
)sql";
// The columns of versions 3 and 4, and of them the fields a transition may change.
constexpr const char* kColumnsV4 =
    "id, request, idempotency_key, state, attempt, worker, worker_name, version, submitted_ms, started_ms, "
    "finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts, tenant";
constexpr const char* kMutableColumnsV4 =
    "state, attempt, worker, worker_name, version, started_ms, finished_ms, next_seq, max_attempts, retry_of, "
    "cancel_requested, outcome, artifacts";
// Versions 1-3 found finished tasks for compaction through this index.
constexpr const char* kFinishedIndexV3 = "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_ms) WHERE finished_ms > 0;";

class Migration {
 public:
  Migration(sqlite3* db, const std::string& path) : db_(db), path_(path) {}

  Status exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return make_error(ErrorCode::kIoError, "journal " + path_ + ": " + sql + ": " + msg,
                        {{"sqlite_code", std::to_string(sqlite3_extended_errcode(db_))}});
    }
    return {};
  }

  // The first column of the first row of `sql` (a count or a pragma); -1 without a row.
  Result<std::int64_t> scalar(const char* sql, std::string_view what) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) return fail(what);
    const int rc = sqlite3_step(s);
    const std::int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(what);
    return v;
  }

  using Stmt = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;
  Result<Stmt> prepare(const char* sql, std::string_view what) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) return fail(what);
    return Stmt(s, &sqlite3_finalize);
  }
  // Steps `s` once and resets it; IO_ERROR unless it is done.
  Status run(sqlite3_stmt* s, std::string_view what) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return fail(what);
    return {};
  }
  tl::unexpected<Error> fail(std::string_view what) const {
    return tl::unexpected(Error{ErrorCode::kIoError, "journal " + path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_),
                                {{"sqlite_code", std::to_string(sqlite3_extended_errcode(db_))}}});
  }

  // Runs `body` and the bump to version `to` as one transaction; rolled back if any part fails.
  Status step(int to, const std::function<Status()>& body) {
    if (auto st = exec("BEGIN IMMEDIATE"); !st) return st;
    Status st = body();
    if (st) st = exec("PRAGMA user_version = " + std::to_string(to));
    if (st) st = exec("COMMIT");
    if (!st) (void)exec("ROLLBACK");  // fails harmlessly if SQLite rolled back already
    return st;
  }

 private:
  sqlite3* db_;
  const std::string& path_;
};

// Version 0: a new file, or one whose creator stopped before its first version bump (it then
// holds empty tables of any version, which are replaced). Tables with rows but no version are
// not a kbfleet journal: refused rather than guessed at.
Status create(Migration& m, const std::string& path) {
  auto rows = m.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tasks'", "read the schema");
  if (!rows) return tl::unexpected(rows.error());
  if (*rows > 0) {
    rows = m.scalar("SELECT count(*) FROM tasks", "read the schema");
    if (!rows) return tl::unexpected(rows.error());
    if (*rows > 0) {
      return make_error(ErrorCode::kIoError, "journal " + path +
                                                 " has tasks but no schema version: not a kbfleet journal (move it "
                                                 "away or point --data elsewhere)");
    }
  }
  return m.step(kVersion, [&] {
    return m.exec(std::string("DROP TABLE IF EXISTS tasks; DROP TABLE IF EXISTS outcomes; ") + kTasksTable +
                  kOutcomesTable);
  });
}

// 1 -> 2: tasks of a version-1 journal predate tenants and belong to the implicit tenant. The
// column may be there already: brokers before the one-transaction rule added it, then bumped
// the version in a second transaction, so a crash between the two left it added at version 1.
Status add_tenant(Migration& m) {
  return m.step(2, [&]() -> Status {
    auto has = m.scalar("SELECT count(*) FROM pragma_table_info('tasks') WHERE name = 'tenant'", "read the schema");
    if (!has) return tl::unexpected(has.error());
    if (*has > 0) return {};
    return m.exec("ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'");
  });
}

// 2 -> 3: rebuilt without the primary key on id (rowids, and with them submission order, kept).
// Repeatable: a version-2 table that an older broker already rebuilt is rebuilt again.
Status drop_id_key(Migration& m) {
  const std::string cols = kColumnsV4;
  return m.step(3, [&] {
    return m.exec(std::string("ALTER TABLE tasks RENAME TO tasks_old; DROP INDEX IF EXISTS tasks_finished; ") +
                  kTasksTableV4 + kFinishedIndexV3 + "INSERT INTO tasks (rowid, " + cols + ") SELECT rowid, " + cols +
                  " FROM tasks_old ORDER BY rowid; DROP TABLE tasks_old;");
  });
}

// 3 -> 4: terminal states move to `outcomes` (in finish order, which compaction relies on), and
// the index compaction used goes. The tasks' rows keep their copy of the terminal fields, which
// the outcome overrides on load.
Status append_outcomes(Migration& m) {
  const std::string cols = kMutableColumnsV4;
  return m.step(4, [&] {
    return m.exec(std::string(kOutcomesTableV4) + "DELETE FROM outcomes; DROP INDEX IF EXISTS tasks_finished; " +
                  "INSERT INTO outcomes (task_row, id, " + cols + ") SELECT rowid, id, " + cols +
                  " FROM tasks WHERE finished_ms > 0 ORDER BY finished_ms, rowid;");
  });
}

using sqlite_values::bind_blob;
using sqlite_values::column_bytes;

// The kMutableColumnsV4 of a version-4 row, selected in that order from column `first` on.
void read_mutable_columns_v4(sqlite3_stmt* s, int first, TaskRecord& r) {
  r.state = column_bytes(s, first);
  r.attempt = sqlite3_column_int64(s, first + 1);
  r.worker = column_bytes(s, first + 2);
  r.worker_name = column_bytes(s, first + 3);
  r.version = column_bytes(s, first + 4);
  r.started_ms = sqlite3_column_int64(s, first + 5);
  r.finished_ms = sqlite3_column_int64(s, first + 6);
  r.next_seq = sqlite3_column_int64(s, first + 7);
  r.max_attempts = sqlite3_column_int64(s, first + 8);
  r.retry_of = column_bytes(s, first + 9);
  r.cancel_requested = sqlite3_column_int(s, first + 10) != 0;
  r.outcome = column_bytes(s, first + 11);
  r.artifacts = column_bytes(s, first + 12);
}

// 4 -> 5: each row's changing fields packed into `fields` (rowids kept), each outcome a batch of
// one (in the same order, which compaction relies on).
Status pack_fields(Migration& m) {
  return m.step(5, [&]() -> Status {
    if (auto st = m.exec(std::string("ALTER TABLE tasks RENAME TO tasks_v4; ALTER TABLE outcomes RENAME TO "
                                     "outcomes_v4; ") + kTasksTable + kOutcomesTable);
        !st) {
      return st;
    }
    protocol::Writer fields;
    {
      const std::string select = std::string("SELECT rowid, id, request, idempotency_key, submitted_ms, tenant, ") +
                                 kMutableColumnsV4 + " FROM tasks_v4 ORDER BY rowid";
      auto read = m.prepare(select.c_str(), "migrate tasks to version 5");
      if (!read) return tl::unexpected(read.error());
      auto write = m.prepare(
          "INSERT INTO tasks (rowid, id, request, idempotency_key, submitted_ms, tenant, fields) VALUES (?, ?, ?, ?, ?, ?, ?)",
          "migrate tasks to version 5");
      if (!write) return tl::unexpected(write.error());
      sqlite3_stmt* r = read->get();
      sqlite3_stmt* w = write->get();
      int rc;
      while ((rc = sqlite3_step(r)) == SQLITE_ROW) {
        TaskRecord t;
        read_mutable_columns_v4(r, 6, t);
        fields.reset();
        journal_fields::encode(fields, ref_of(t));
        sqlite3_bind_int64(w, 1, sqlite3_column_int64(r, 0));
        for (int i = 1; i <= 3; ++i) sqlite3_bind_value(w, i + 1, sqlite3_column_value(r, i));
        sqlite3_bind_int64(w, 5, sqlite3_column_int64(r, 4));
        sqlite3_bind_value(w, 6, sqlite3_column_value(r, 5));
        bind_blob(w, 7, fields.bytes());
        if (auto st = m.run(w, "migrate tasks to version 5"); !st) return st;
      }
      if (rc != SQLITE_DONE) return m.fail("migrate tasks to version 5");
    }
    {
      const std::string select =
          std::string("SELECT task_row, id, ") + kMutableColumnsV4 + " FROM outcomes_v4 ORDER BY rowid";
      auto read = m.prepare(select.c_str(), "migrate outcomes to version 5");
      if (!read) return tl::unexpected(read.error());
      auto write = m.prepare("INSERT INTO outcomes (finished_ms, records) VALUES (?, ?)", "migrate outcomes to version 5");
      if (!write) return tl::unexpected(write.error());
      sqlite3_stmt* r = read->get();
      sqlite3_stmt* w = write->get();
      journal_fields::OutcomeBatch batch;
      int rc;
      while ((rc = sqlite3_step(r)) == SQLITE_ROW) {
        TaskRecord t;
        t.row = sqlite3_column_int64(r, 0);
        t.id = column_bytes(r, 1);
        read_mutable_columns_v4(r, 2, t);
        batch.clear();
        batch.add(ref_of(t), fields);
        const std::string_view bytes = batch.finish();
        sqlite3_bind_int64(w, 1, batch.latest_finish_ms());
        bind_blob(w, 2, bytes);
        if (auto st = m.run(w, "migrate outcomes to version 5"); !st) return st;
      }
      if (rc != SQLITE_DONE) return m.fail("migrate outcomes to version 5");
    }
    return m.exec("DROP TABLE tasks_v4; DROP TABLE outcomes_v4;");
  });
}

}  // namespace

Status migrate(sqlite3* db, const std::string& path) {
  Migration m(db, path);
  auto version = m.scalar("PRAGMA user_version", "read schema version (is another kbfleet-broker using this --data?)");
  if (!version) return tl::unexpected(version.error());
  if (*version > kVersion) {
    return make_error(ErrorCode::kIoError, "journal " + path + " has schema version " + std::to_string(*version) +
                                               ", newer than this broker's " + std::to_string(kVersion) +
                                               "; run the newer kbfleet-broker");
  }
  if (*version == 0) return create(m, path);
  // One step per version, each committed with its bump: a crash resumes at the next step.
  const std::function<Status(Migration&)> steps[] = {add_tenant, drop_id_key, append_outcomes, pack_fields};
  for (auto v = *version; v < kVersion; ++v) {
    if (auto st = steps[v - 1](m); !st) return st;
  }
  return {};
}

}  // namespace kbfleet::broker::journal_schema
