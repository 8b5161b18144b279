#include "broker/journal/schema.hpp"

#include <sqlite3.h>

#include <functional>

namespace kbfleet::broker::journal_schema {
namespace {

// `tasks` (versions 3 and 4): one row per task, written at acceptance and rewritten by
// non-terminal transitions. `rowid` keeps insertion order, which recovery uses to requeue tasks
// in their original submission order.
constexpr const char* kTasksTable = R"sql(
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
// `outcomes` (version 4): a task's terminal state, appended once when it finishes (terminal
// states are final); on load it overrides the task's row. Appending in finish order keeps both
// tables' writes on their rightmost pages (a commit of N finishing tasks dirties a few pages,
// not the N scattered rows of a rewrite), and makes compaction a scan from the start of
// `outcomes` without an index to maintain on every finish.
constexpr const char* kOutcomesTable = R"sql(
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
  tl::unexpected<Error> fail(std::string_view what) const {
    return tl::unexpected(Error{ErrorCode::kIoError, "journal " + path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_),
                                {{"sqlite_code", std::to_string(sqlite3_extended_errcode(db_))}}});
  }

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
  const std::string cols = kColumns;
  return m.step(3, [&] {
    return m.exec(std::string("ALTER TABLE tasks RENAME TO tasks_old; DROP INDEX IF EXISTS tasks_finished; ") +
                  kTasksTable + kFinishedIndexV3 + "INSERT INTO tasks (rowid, " + cols + ") SELECT rowid, " + cols +
                  " FROM tasks_old ORDER BY rowid; DROP TABLE tasks_old;");
  });
}

// 3 -> 4: terminal states move to `outcomes` (in finish order, which compaction relies on), and
// the index compaction used goes. The tasks' rows keep their copy of the terminal fields, which
// the outcome overrides on load.
Status append_outcomes(Migration& m) {
  const std::string cols = kMutableColumns;
  return m.step(4, [&] {
    return m.exec(std::string(kOutcomesTable) + "DELETE FROM outcomes; DROP INDEX IF EXISTS tasks_finished; " +
                  "INSERT INTO outcomes (task_row, id, " + cols + ") SELECT rowid, id, " + cols +
                  " FROM tasks WHERE finished_ms > 0 ORDER BY finished_ms, rowid;");
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
  const std::function<Status(Migration&)> steps[] = {add_tenant, drop_id_key, append_outcomes};
  for (auto v = *version; v < kVersion; ++v) {
    if (auto st = steps[v - 1](m); !st) return st;
  }
  return {};
}

}  // namespace kbfleet::broker::journal_schema
