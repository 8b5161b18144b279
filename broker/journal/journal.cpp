#include "broker/journal/journal.hpp"

#include <sqlite3.h>

namespace kbfleet::broker {
namespace {

// 2: the `tenant` column (issue #7). 3: `id` is no longer a primary key: rows are updated by
// rowid, which the broker keeps per task, so a commit dirties no page of a random-keyed index
// (ids are 128 random bits; unique by construction). Older journals are migrated at open.
constexpr int kSchemaVersion = 3;

constexpr const char* kColumns =
    "id, request, idempotency_key, state, attempt, worker, worker_name, version, submitted_ms, started_ms, "
    "finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts, tenant";
// One row per task. `rowid` keeps insertion order, which recovery uses to requeue tasks in their
// original submission order. The partial index makes compaction a range scan over finished tasks.
constexpr const char* kSchema = R"sql(
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
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_ms) WHERE finished_ms > 0;
)sql";

constexpr const char* kInsert =
    "INSERT INTO tasks (id, request, idempotency_key, state, attempt, worker, worker_name, version, submitted_ms, "
    "started_ms, finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts, tenant) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";
constexpr const char* kUpdate =
    "UPDATE tasks SET state = ?4, attempt = ?5, worker = ?6, worker_name = ?7, version = ?8, started_ms = ?10, "
    "finished_ms = ?11, next_seq = ?12, max_attempts = ?13, retry_of = ?14, cancel_requested = ?15, outcome = ?16, "
    "artifacts = ?17 WHERE rowid = ?19 AND id = ?1 AND tenant = ?18";
constexpr const char* kCompact =
    "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE finished_ms > 0 AND finished_ms <= ?1 LIMIT ?2)";
constexpr const char* kLoad =
    "SELECT id, request, idempotency_key, state, attempt, worker, worker_name, version, submitted_ms, started_ms, "
    "finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts, tenant, rowid FROM tasks "
    "ORDER BY rowid";

void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
void bind_blob(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_blob(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

// Binds every column; kUpdate uses the same parameter numbers and ignores ?2, ?3, ?9; kInsert
// ignores ?19 (the row).
void bind_record(sqlite3_stmt* s, const TaskRecord& r) {
  bind_text(s, 1, r.id);
  bind_blob(s, 2, r.request);
  bind_text(s, 3, r.idempotency_key);
  bind_text(s, 4, r.state);
  sqlite3_bind_int64(s, 5, r.attempt);
  bind_text(s, 6, r.worker);
  bind_text(s, 7, r.worker_name);
  bind_text(s, 8, r.version);
  sqlite3_bind_int64(s, 9, r.submitted_ms);
  sqlite3_bind_int64(s, 10, r.started_ms);
  sqlite3_bind_int64(s, 11, r.finished_ms);
  sqlite3_bind_int64(s, 12, r.next_seq);
  sqlite3_bind_int64(s, 13, r.max_attempts);
  bind_text(s, 14, r.retry_of);
  sqlite3_bind_int(s, 15, r.cancel_requested ? 1 : 0);
  bind_blob(s, 16, r.outcome);
  bind_blob(s, 17, r.artifacts);
  bind_text(s, 18, r.tenant);
  sqlite3_bind_int64(s, 19, r.row);
}

std::string column_bytes(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  int n = sqlite3_column_bytes(s, i);
  return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), static_cast<std::size_t>(n));
}

// Runs a prepared statement to completion and resets it (bindings are cleared too, so the
// SQLITE_STATIC buffers are not referenced after the call).
int step_once(sqlite3_stmt* s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc;
}

}  // namespace

Result<Durability> parse_durability(std::string_view name) {
  if (name == "none") return Durability::kNone;
  if (name == "batch") return Durability::kBatch;
  if (name == "fsync") return Durability::kFsync;
  return make_error(ErrorCode::kInvalidArgument, "--durability must be none, batch or fsync, not '" + std::string(name) + "'");
}

std::string_view durability_name(Durability d) {
  switch (d) {
    case Durability::kNone: return "none";
    case Durability::kBatch: return "batch";
    case Durability::kFsync: return "fsync";
  }
  return "none";
}

Result<std::unique_ptr<Journal>> Journal::open(const Options& options) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = "cannot open journal " + options.path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return make_error(ErrorCode::kIoError, msg + " (check --data and its permissions)");
  }
  std::unique_ptr<Journal> j(new Journal(db, options.path, options.durability));
  // EXCLUSIVE before the first WAL access: the lock is taken by the first read below and held
  // until close, so a second broker on the same --data fails instead of corrupting state. It
  // also lets WAL work without the shared-memory index file (sqlite.org/wal.html, section 8).
  if (auto st = j->exec("PRAGMA locking_mode = EXCLUSIVE"); !st) return tl::unexpected(st.error());
  if (auto st = j->exec("PRAGMA journal_mode = WAL"); !st) {
    return make_error(ErrorCode::kIoError, st.error().message + " (is another kbfleet-broker using this --data?)");
  }
  // NORMAL in WAL mode syncs only at checkpoints: a commit is one write() to the WAL, durable
  // against a process crash; FULL also fsyncs the WAL on every commit.
  const char* sync = options.durability == Durability::kFsync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
  if (auto st = j->exec(sync); !st) return tl::unexpected(st.error());
  // No automatic checkpoint after the commit that crosses N pages: the broker checkpoints on its
  // once-a-second timer (checkpoint_passive), so a page rewritten by many commits in between is
  // copied into the database once. The WAL shrinks back to 64 MiB at most.
  if (auto st = j->exec("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864"); !st) {
    return tl::unexpected(st.error());
  }
  if (options.max_pages > 0) {
    auto sql = "PRAGMA max_page_count = " + std::to_string(options.max_pages);
    if (auto st = j->exec(sql.c_str()); !st) return tl::unexpected(st.error());
  }
  sqlite3_stmt* v = nullptr;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &v, nullptr) != SQLITE_OK) return tl::unexpected(j->error("read schema version"));
  int version = sqlite3_step(v) == SQLITE_ROW ? sqlite3_column_int(v, 0) : -1;
  sqlite3_finalize(v);
  if (version < 0) return tl::unexpected(j->error("read schema version (is another kbfleet-broker using this --data?)"));
  if (version > kSchemaVersion) {
    return make_error(ErrorCode::kIoError, "journal " + options.path + " has schema version " + std::to_string(version) +
                                               ", newer than this broker's " + std::to_string(kSchemaVersion) +
                                               "; run the newer kbfleet-broker");
  }
  if (version == 1) {
    // Tasks of a version-1 journal predate tenants: they belong to the implicit tenant.
    if (auto st = j->exec("ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'"); !st) {
      return tl::unexpected(st.error());
    }
  }
  if (version == 1 || version == 2) {
    // Rebuild without the primary key on id (rowids, and with them submission order, kept).
    const std::string cols = kColumns;
    const std::string sql = "BEGIN IMMEDIATE; ALTER TABLE tasks RENAME TO tasks_old; DROP INDEX IF EXISTS tasks_finished; " +
                            std::string(kSchema) + "INSERT INTO tasks (rowid, " + cols + ") SELECT rowid, " + cols +
                            " FROM tasks_old ORDER BY rowid; DROP TABLE tasks_old; COMMIT;";
    if (auto st = j->exec(sql.c_str()); !st) {
      (void)j->exec("ROLLBACK");
      return tl::unexpected(st.error());
    }
  }
  if (auto st = j->exec(kSchema); !st) return tl::unexpected(st.error());
  if (auto st = j->exec(("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str()); !st) {
    return tl::unexpected(st.error());
  }
  if (auto st = j->prepare_all(); !st) return tl::unexpected(st.error());
  return j;
}

Journal::~Journal() {
  sqlite3_finalize(insert_);
  sqlite3_finalize(update_);
  sqlite3_finalize(compact_);
  sqlite3_close_v2(db_);  // rolls back an open transaction
}

Error Journal::error(std::string_view what) const {
  return Error{ErrorCode::kIoError,
               "journal " + path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_),
               {{"sqlite_code", std::to_string(sqlite3_extended_errcode(db_))}}};
}

Status Journal::failed(std::string_view what) {
  Error e = error(what);
  // Some errors (SQLITE_FULL, SQLITE_IOERR) make SQLite roll the whole transaction back.
  if (sqlite3_get_autocommit(db_) != 0) {
    in_transaction_ = false;
    pending_ = 0;
  }
  return tl::unexpected(std::move(e));
}

Status Journal::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return make_error(ErrorCode::kIoError, "journal " + path_ + ": " + sql + ": " + msg,
                      {{"sqlite_code", std::to_string(sqlite3_extended_errcode(db_))}});
  }
  return {};
}

Status Journal::prepare_all() {
  for (auto [sql, stmt] : {std::pair{kInsert, &insert_}, std::pair{kUpdate, &update_}, std::pair{kCompact, &compact_}}) {
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr) != SQLITE_OK) {
      return tl::unexpected(error("prepare"));
    }
  }
  return {};
}

Status Journal::begin_if_needed() {
  if (in_transaction_) return {};
  if (auto st = exec("BEGIN IMMEDIATE"); !st) return st;
  in_transaction_ = true;
  return {};
}

Result<std::int64_t> Journal::insert(const TaskRecord& r) {
  if (auto st = begin_if_needed(); !st) return tl::unexpected(st.error());
  bind_record(insert_, r);
  if (step_once(insert_) != SQLITE_DONE) return tl::unexpected(failed("insert task " + r.id).error());
  ++pending_;
  return sqlite3_last_insert_rowid(db_);
}

Status Journal::update(const TaskRecord& r) {
  if (auto st = begin_if_needed(); !st) return st;
  bind_record(update_, r);
  if (step_once(update_) != SQLITE_DONE) return failed("update task " + r.id);
  if (sqlite3_changes(db_) != 1) {
    return make_error(ErrorCode::kInternal, "journal " + path_ + ": task " + r.id + " has no row " + std::to_string(r.row));
  }
  ++pending_;
  return {};
}

Result<std::size_t> Journal::compact(std::int64_t finished_before_ms, std::size_t limit) {
  if (auto st = begin_if_needed(); !st) return tl::unexpected(st.error());
  sqlite3_bind_int64(compact_, 1, finished_before_ms);
  sqlite3_bind_int64(compact_, 2, static_cast<std::int64_t>(limit));
  if (step_once(compact_) != SQLITE_DONE) return tl::unexpected(failed("compact").error());
  auto n = static_cast<std::size_t>(sqlite3_changes(db_));
  pending_ += n;
  return n;
}

Status Journal::commit() {
  if (!in_transaction_) return {};
  if (auto st = exec("COMMIT"); !st) {
    rollback();
    return st;
  }
  in_transaction_ = false;
  pending_ = 0;
  return {};
}

void Journal::rollback() {
  if (in_transaction_) {
    // After some errors (SQLITE_FULL, IOERR) SQLite has already rolled back; then this fails.
    (void)exec("ROLLBACK");
  }
  in_transaction_ = false;
  pending_ = 0;
}

Status Journal::load(const std::function<void(TaskRecord&&)>& fn) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, kLoad, -1, &s, nullptr) != SQLITE_OK) return tl::unexpected(error("load"));
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    TaskRecord r;
    r.id = column_bytes(s, 0);
    r.request = column_bytes(s, 1);
    r.idempotency_key = column_bytes(s, 2);
    r.state = column_bytes(s, 3);
    r.attempt = sqlite3_column_int64(s, 4);
    r.worker = column_bytes(s, 5);
    r.worker_name = column_bytes(s, 6);
    r.version = column_bytes(s, 7);
    r.submitted_ms = sqlite3_column_int64(s, 8);
    r.started_ms = sqlite3_column_int64(s, 9);
    r.finished_ms = sqlite3_column_int64(s, 10);
    r.next_seq = sqlite3_column_int64(s, 11);
    r.max_attempts = sqlite3_column_int64(s, 12);
    r.retry_of = column_bytes(s, 13);
    r.cancel_requested = sqlite3_column_int(s, 14) != 0;
    r.outcome = column_bytes(s, 15);
    r.artifacts = column_bytes(s, 16);
    r.tenant = column_bytes(s, 17);
    r.row = sqlite3_column_int64(s, 18);
    fn(std::move(r));
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE) return tl::unexpected(error("load"));
  return {};
}

Status Journal::checkpoint_passive() {
  if (in_transaction_) return {};  // never inside a turn's transaction
  if (sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) != SQLITE_OK) {
    return tl::unexpected(error("checkpoint"));
  }
  return {};
}

Status Journal::checkpoint() {
  if (auto st = commit(); !st) return st;
  return exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

}  // namespace kbfleet::broker
