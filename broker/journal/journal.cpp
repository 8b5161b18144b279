#include "broker/journal/journal.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <set>

#include "broker/journal/checkpointer.hpp"
#include "broker/journal/schema.hpp"

namespace kbfleet::broker {
namespace {

using journal_schema::kMutableColumns;

constexpr const char* kInsert =
    "INSERT INTO tasks (id, request, idempotency_key, state, attempt, worker, worker_name, version, submitted_ms, "
    "started_ms, finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts, tenant) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";
constexpr const char* kUpdate =
    "UPDATE tasks SET state = ?4, attempt = ?5, worker = ?6, worker_name = ?7, version = ?8, started_ms = ?10, "
    "finished_ms = ?11, next_seq = ?12, max_attempts = ?13, retry_of = ?14, cancel_requested = ?15, outcome = ?16, "
    "artifacts = ?17 WHERE rowid = ?19 AND id = ?1 AND tenant = ?18";
// A plain single-row INSERT: no statement journal and no lookup of the task's row. The id is
// kept so load() can tell an outcome that does not belong to its row (a broker bug) and ignore
// it rather than finish the wrong task.
constexpr const char* kAppendOutcome =
    "INSERT INTO outcomes (task_row, id, state, attempt, worker, worker_name, version, started_ms, finished_ms, "
    "next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts) "
    "VALUES (?19, ?1, ?4, ?5, ?6, ?7, ?8, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
// Compaction: outcomes are in finish order, so the finished tasks to delete are a prefix.
constexpr const char* kCompactScan = "SELECT rowid, finished_ms FROM outcomes ORDER BY rowid LIMIT ?1";
constexpr const char* kCompactTasks =
    "DELETE FROM tasks WHERE rowid IN (SELECT task_row FROM outcomes WHERE rowid <= ?1)";
constexpr const char* kCompactOutcomes = "DELETE FROM outcomes WHERE rowid <= ?1";
// Both loads select kMutableColumns as one run (read_mutable_columns): from column 6 of the tasks
// query, from column 1 of the outcomes query (after task_row; the outcome's id follows them).
constexpr const char* kLoadPrefix = "SELECT id, request, idempotency_key, submitted_ms, tenant, rowid, ";
constexpr int kLoadMutableFirst = 6;
constexpr int kOutcomeMutableFirst = 1;

void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
void bind_blob(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_blob(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

// Binds every column; kUpdate and kAppendOutcome use the same parameter numbers and ignore ?2, ?3,
// ?9; kInsert ignores ?19 (the row).
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

// The kMutableColumns of a row, selected in that order from column `first` on.
void read_mutable_columns(sqlite3_stmt* s, int first, TaskRecord& r) {
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

namespace {

const char* synchronous_pragma(Durability d) {
  return d == Durability::kFsync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
}

// The files (device, inode) a Journal of this process has open. The "unix-excl" VFS keeps other
// processes out, but not a second connection in this one, which would be a second writer. Not an
// flock or fcntl of our own: closing any fd of the file would drop SQLite's fcntl lock (fcntl(2)).
std::mutex claims_mu;
std::set<std::pair<dev_t, ino_t>> claims;

}  // namespace

JournalClaim::~JournalClaim() {
  if (!held) return;
  std::lock_guard lock(claims_mu);
  claims.erase({dev, ino});
}

namespace {

// Claims the journal file (it exists once SQLite opened it).
Result<JournalClaim> claim(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno_error("stat", path, errno);
  std::lock_guard lock(claims_mu);
  if (!claims.insert({st.st_dev, st.st_ino}).second) {
    return make_error(ErrorCode::kIoError, "journal " + path + " is open already (is another kbfleet-broker using this --data?)");
  }
  JournalClaim c;
  c.dev = st.st_dev;
  c.ino = st.st_ino;
  c.held = true;
  return c;
}

}  // namespace

Result<std::unique_ptr<Journal>> Journal::open(const Options& options) {
  // "unix-excl": the first lock takes an fcntl write lock on the file for the process (other
  // processes are kept out, as locking_mode=EXCLUSIVE did) and the WAL's wal-index lives in this
  // process's memory, shared by this connection and the checkpoint thread's, so neither pays an
  // fcntl per transaction (sqlite.org/vfs.html, "unix-excl").
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                           "unix-excl");
  if (rc != SQLITE_OK) {
    std::string msg = "cannot open journal " + options.path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return make_error(ErrorCode::kIoError, msg + " (check --data and its permissions)");
  }
  auto claimed = claim(options.path);
  if (!claimed) {
    sqlite3_close_v2(db);
    return tl::unexpected(claimed.error());
  }
  std::unique_ptr<Journal> j(new Journal(db, std::move(*claimed), options.path, options.durability));
  if (auto st = j->exec("PRAGMA journal_mode = WAL"); !st) {
    return make_error(ErrorCode::kIoError, st.error().message + " (is another kbfleet-broker using this --data?)");
  }
  // NORMAL in WAL mode syncs only at checkpoints: a commit is one write() to the WAL, durable
  // against a process crash; FULL also fsyncs the WAL on every commit.
  if (auto st = j->exec(synchronous_pragma(options.durability)); !st) return tl::unexpected(st.error());
  // No automatic checkpoint after the commit that crosses N pages: the checkpoint thread copies
  // the WAL when the broker's once-a-second timer asks (checkpoint_passive), so a page rewritten
  // by many commits in between is copied into the database once. The WAL shrinks back to 64 MiB
  // at most.
  if (auto st = j->exec("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864"); !st) {
    return tl::unexpected(st.error());
  }
  if (options.max_pages > 0) {
    auto sql = "PRAGMA max_page_count = " + std::to_string(options.max_pages);
    if (auto st = j->exec(sql.c_str()); !st) return tl::unexpected(st.error());
  }
  if (auto st = journal_schema::migrate(db, options.path); !st) return tl::unexpected(st.error());
  if (auto st = j->prepare_all(); !st) return tl::unexpected(st.error());
  auto checkpointer = Checkpointer::start(options.path, synchronous_pragma(options.durability));
  if (!checkpointer) return tl::unexpected(checkpointer.error());
  j->checkpointer_ = std::move(*checkpointer);
  return j;
}

Journal::Journal(sqlite3* db, JournalClaim claim, std::string path, Durability d)
    : db_(db), claim_(std::move(claim)), path_(std::move(path)), durability_(d) {}

Journal::~Journal() {
  checkpointer_.reset();  // first: its connection must not outlive the writer's
  for (sqlite3_stmt* s : {insert_, update_, outcome_, begin_, commit_, compact_scan_, compact_tasks_, compact_outcomes_}) {
    sqlite3_finalize(s);
  }
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
  // Prepared once: BEGIN and COMMIT run every turn that writes, and parsing them each time cost
  // as much as stepping them.
  const std::pair<const char*, sqlite3_stmt**> all[] = {
      {kInsert, &insert_},           {kUpdate, &update_},          {kAppendOutcome, &outcome_},
      {"BEGIN IMMEDIATE", &begin_},  {"COMMIT", &commit_},         {kCompactScan, &compact_scan_},
      {kCompactTasks, &compact_tasks_}, {kCompactOutcomes, &compact_outcomes_}};
  for (auto [sql, stmt] : all) {
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr) != SQLITE_OK) {
      return tl::unexpected(error("prepare"));
    }
  }
  return {};
}

Status Journal::begin_if_needed() {
  if (in_transaction_) return {};
  if (step_once(begin_) != SQLITE_DONE) return tl::unexpected(error("BEGIN IMMEDIATE"));
  in_transaction_ = true;
  return {};
}

Result<std::int64_t> Journal::insert(const TaskRecord& r) {
  if (auto st = begin_if_needed(); !st) return tl::unexpected(st.error());
  bind_record(insert_, r);
  if (step_once(insert_) != SQLITE_DONE) return tl::unexpected(failed("insert task " + r.id).error());
  const std::int64_t row = sqlite3_last_insert_rowid(db_);
  if (r.finished_ms > 0) {
    // Accepted already finished (cancelled in the turn it arrived): its state goes where every
    // terminal state goes.
    TaskRecord at = r;
    at.row = row;
    if (auto st = append_outcome(at); !st) return tl::unexpected(st.error());
  }
  ++pending_;
  return row;
}

Status Journal::update(const TaskRecord& r) {
  if (auto st = begin_if_needed(); !st) return st;
  if (r.finished_ms > 0) {
    if (auto st = append_outcome(r); !st) return st;
  } else {
    bind_record(update_, r);
    if (step_once(update_) != SQLITE_DONE) return failed("update task " + r.id);
    if (sqlite3_changes(db_) != 1) return no_row(r);
  }
  ++pending_;
  return {};
}

Status Journal::append_outcome(const TaskRecord& r) {
  if (r.row <= 0) return no_row(r);
  bind_record(outcome_, r);
  if (step_once(outcome_) != SQLITE_DONE) return failed("append the outcome of task " + r.id);
  return {};
}

Status Journal::no_row(const TaskRecord& r) const {
  return make_error(ErrorCode::kInternal, "journal " + path_ + ": task " + r.id + " has no row " + std::to_string(r.row));
}

Result<std::size_t> Journal::compact(std::int64_t finished_before_ms, std::size_t limit) {
  // The longest prefix of `outcomes` (finish order) finished at or before the bound. A wall
  // clock stepped back leaves rows behind a later one until that one is old enough too.
  std::int64_t through = 0;
  std::size_t n = 0;
  sqlite3_bind_int64(compact_scan_, 1, static_cast<std::int64_t>(limit));
  int rc;
  while ((rc = sqlite3_step(compact_scan_)) == SQLITE_ROW && sqlite3_column_int64(compact_scan_, 1) <= finished_before_ms) {
    through = sqlite3_column_int64(compact_scan_, 0);
    ++n;
  }
  sqlite3_reset(compact_scan_);
  sqlite3_clear_bindings(compact_scan_);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return tl::unexpected(failed("compact").error());
  if (n == 0) return std::size_t{0};  // no transaction: a tick with nothing to delete commits nothing
  if (auto st = begin_if_needed(); !st) return tl::unexpected(st.error());
  for (sqlite3_stmt* s : {compact_tasks_, compact_outcomes_}) {
    sqlite3_bind_int64(s, 1, through);
    if (step_once(s) != SQLITE_DONE) return tl::unexpected(failed("compact").error());
  }
  pending_ += n;
  return n;
}

Status Journal::commit() {
  if (!in_transaction_) return {};
  if (step_once(commit_) != SQLITE_DONE) {
    Error e = error("COMMIT");
    rollback();
    return tl::unexpected(std::move(e));
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
  // A merge join, streaming both tables: tasks in submission order, outcomes sorted by their
  // task's row (SQLite's sorter spills to temporary files), so memory does not grow with the
  // number of finished tasks a journal holds.
  using Stmt = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;
  sqlite3_stmt* raw_tasks = nullptr;
  sqlite3_stmt* raw_outcomes = nullptr;
  const std::string load_tasks = std::string(kLoadPrefix) + kMutableColumns + " FROM tasks ORDER BY rowid";
  if (sqlite3_prepare_v2(db_, load_tasks.c_str(), -1, &raw_tasks, nullptr) != SQLITE_OK) return tl::unexpected(error("load"));
  Stmt tasks(raw_tasks, &sqlite3_finalize);
  const std::string load_outcomes =
      std::string("SELECT task_row, ") + kMutableColumns + ", id FROM outcomes ORDER BY task_row, rowid";
  if (sqlite3_prepare_v2(db_, load_outcomes.c_str(), -1, &raw_outcomes, nullptr) != SQLITE_OK) return tl::unexpected(error("load"));
  Stmt outcomes(raw_outcomes, &sqlite3_finalize);
  sqlite3_stmt* o = outcomes.get();
  int orc = sqlite3_step(o);
  int rc;
  while ((rc = sqlite3_step(tasks.get())) == SQLITE_ROW) {
    sqlite3_stmt* t = tasks.get();
    TaskRecord r;
    r.id = column_bytes(t, 0);
    r.request = column_bytes(t, 1);
    r.idempotency_key = column_bytes(t, 2);
    r.submitted_ms = sqlite3_column_int64(t, 3);
    r.tenant = column_bytes(t, 4);
    r.row = sqlite3_column_int64(t, 5);
    read_mutable_columns(t, kLoadMutableFirst, r);
    // Outcomes of rows before this one have no task (a broker bug): ignored. This row's, in
    // the order they were written: the last one that names this task wins.
    for (; orc == SQLITE_ROW && sqlite3_column_int64(o, 0) <= r.row; orc = sqlite3_step(o)) {
      if (sqlite3_column_int64(o, 0) < r.row || column_bytes(o, kOutcomeMutableFirst + 13) != r.id) {
        ++mismatched_outcomes_;
        continue;
      }
      read_mutable_columns(o, kOutcomeMutableFirst, r);
    }
    if (orc != SQLITE_ROW && orc != SQLITE_DONE) return tl::unexpected(error("load outcomes"));
    fn(std::move(r));
  }
  if (rc != SQLITE_DONE) return tl::unexpected(error("load"));
  for (; orc == SQLITE_ROW; orc = sqlite3_step(o)) ++mismatched_outcomes_;  // after the last task's row
  if (orc != SQLITE_DONE) return tl::unexpected(error("load outcomes"));
  return {};
}

Status Journal::checkpoint_passive() {
  if (!checkpointer_) return {};
  return checkpointer_->request();
}

Status Journal::finish_checkpoint() {
  if (in_transaction_ || !checkpointer_ || !checkpointer_->take_finished()) return {};
  // Usually the thread is idle now; if the timer already asked for the next pass, one of the
  // two gets SQLITE_BUSY on the checkpoint lock and copies nothing, which is harmless.
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) return tl::unexpected(error("checkpoint"));
  return {};
}

std::uint64_t Journal::checkpoint_passes() const { return checkpointer_ ? checkpointer_->passes() : 0; }

Status Journal::checkpoint() {
  if (auto st = commit(); !st) return st;
  checkpointer_.reset();  // a TRUNCATE checkpoint waits for no one: stop the thread first
  return exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

}  // namespace kbfleet::broker
