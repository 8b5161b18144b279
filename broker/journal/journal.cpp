#include "broker/journal/journal.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <set>

#include "broker/journal/checkpointer.hpp"
#include "broker/journal/schema.hpp"
#include "broker/journal/sqlite_values.hpp"

namespace kbfleet::broker {
namespace {

using sqlite_values::bind_blob;
using sqlite_values::bind_text;
using sqlite_values::column_bytes;
using sqlite_values::column_view;

constexpr const char* kInsert =
    "INSERT INTO tasks (id, request, idempotency_key, submitted_ms, tenant, fields) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
// The id and tenant are checked: a row that does not hold the task is not overwritten.
constexpr const char* kUpdate = "UPDATE tasks SET fields = ?3 WHERE rowid = ?4 AND id = ?1 AND tenant = ?2";
// One row per commit with every task that finished in it (journal_fields::OutcomeBatch).
constexpr const char* kAppendOutcomes = "INSERT INTO outcomes (finished_ms, records) VALUES (?1, ?2)";
// Compaction: outcomes are in commit order, so the finished tasks to delete are those of a prefix.
constexpr const char* kCompactScan = "SELECT rowid, finished_ms, records FROM outcomes ORDER BY rowid LIMIT ?1";
// The id too: an outcome whose row holds another task (ignored by load()) deletes nothing.
constexpr const char* kCompactTask = "DELETE FROM tasks WHERE rowid = ?1 AND id = ?2";
constexpr const char* kCompactOutcomes = "DELETE FROM outcomes WHERE rowid <= ?1";

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
  for (sqlite3_stmt* s : {insert_, update_, outcomes_, begin_, commit_, compact_scan_, compact_task_, compact_outcomes_}) {
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
    batch_.clear();
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
      {kInsert, &insert_},           {kUpdate, &update_},          {kAppendOutcomes, &outcomes_},
      {"BEGIN IMMEDIATE", &begin_},  {"COMMIT", &commit_},         {kCompactScan, &compact_scan_},
      {kCompactTask, &compact_task_}, {kCompactOutcomes, &compact_outcomes_}};
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

Result<std::int64_t> Journal::insert(const TaskRecordRef& r) {
  if (auto st = begin_if_needed(); !st) return tl::unexpected(st.error());
  fields_.reset();
  journal_fields::encode(fields_, r);
  bind_text(insert_, 1, r.id);
  bind_blob(insert_, 2, r.request);
  bind_text(insert_, 3, r.idempotency_key);
  sqlite3_bind_int64(insert_, 4, r.submitted_ms);
  bind_text(insert_, 5, r.tenant);
  bind_blob(insert_, 6, fields_.bytes());
  if (step_once(insert_) != SQLITE_DONE) return tl::unexpected(failed("insert task " + std::string(r.id)).error());
  const std::int64_t row = sqlite3_last_insert_rowid(db_);
  if (r.finished_ms > 0) {
    // Accepted already finished (cancelled in the turn it arrived): its state goes where every
    // terminal state goes.
    TaskRecordRef at = r;
    at.row = row;
    batch_.add(at, fields_);
  }
  ++pending_;
  return row;
}

Status Journal::update(const TaskRecordRef& r) {
  if (r.row <= 0) return no_row(r);
  if (auto st = begin_if_needed(); !st) return st;
  if (r.finished_ms > 0) {
    batch_.add(r, fields_);  // written by commit(), as one row with the turn's other outcomes
  } else {
    fields_.reset();
    journal_fields::encode(fields_, r);
    bind_text(update_, 1, r.id);
    bind_text(update_, 2, r.tenant);
    bind_blob(update_, 3, fields_.bytes());
    sqlite3_bind_int64(update_, 4, r.row);
    if (step_once(update_) != SQLITE_DONE) return failed("update task " + std::string(r.id));
    if (sqlite3_changes(db_) != 1) return no_row(r);
  }
  ++pending_;
  return {};
}

Status Journal::no_row(const TaskRecordRef& r) const {
  return make_error(ErrorCode::kInternal, "journal " + path_ + ": task " + std::string(r.id) + " has no row " + std::to_string(r.row));
}

Result<std::size_t> Journal::compact(std::int64_t finished_before_ms, std::size_t limit) {
  // The longest prefix of `outcomes` (commit order) finished at or before the bound, of at most
  // `limit` tasks (at least one batch). A wall clock stepped back leaves rows behind a later one
  // until that one is old enough too.
  std::int64_t through = 0;
  std::vector<std::pair<std::int64_t, std::string>> rows;
  sqlite3_bind_int64(compact_scan_, 1, static_cast<std::int64_t>(limit));
  int rc;
  Status decoded;
  while ((rc = sqlite3_step(compact_scan_)) == SQLITE_ROW && sqlite3_column_int64(compact_scan_, 1) <= finished_before_ms) {
    const std::int64_t batch_row = sqlite3_column_int64(compact_scan_, 0);
    auto entries = journal_fields::decode_batch(column_view(compact_scan_, 2), path_ + ", outcome batch " + std::to_string(batch_row));
    if (!entries) {
      decoded = tl::unexpected(entries.error());
      break;
    }
    if (!rows.empty() && rows.size() + entries->size() > limit) break;
    for (const auto& e : *entries) rows.emplace_back(e.task_row, e.id);
    through = batch_row;
  }
  sqlite3_reset(compact_scan_);
  sqlite3_clear_bindings(compact_scan_);
  if (!decoded) return tl::unexpected(decoded.error());
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return tl::unexpected(failed("compact").error());
  if (through == 0) return std::size_t{0};  // no transaction: a tick with nothing to delete commits nothing
  if (auto st = begin_if_needed(); !st) return tl::unexpected(st.error());
  for (const auto& [row, id] : rows) {
    sqlite3_bind_int64(compact_task_, 1, row);
    bind_text(compact_task_, 2, id);
    if (step_once(compact_task_) != SQLITE_DONE) return tl::unexpected(failed("compact").error());
  }
  sqlite3_bind_int64(compact_outcomes_, 1, through);
  if (step_once(compact_outcomes_) != SQLITE_DONE) return tl::unexpected(failed("compact").error());
  pending_ += rows.size();
  return rows.size();
}

Status Journal::commit() {
  if (!in_transaction_) return {};
  if (!batch_.empty()) {
    const std::size_t n = batch_.size();
    const std::string_view records = batch_.finish();
    sqlite3_bind_int64(outcomes_, 1, batch_.latest_finish_ms());
    bind_blob(outcomes_, 2, records);
    const int rc = step_once(outcomes_);
    batch_.clear();
    if (rc != SQLITE_DONE) {
      Error e = error("append the outcomes of " + std::to_string(n) + " tasks");
      rollback();
      return tl::unexpected(std::move(e));
    }
  }
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
  batch_.clear();
}

Status Journal::stage_outcomes() {
  // Each batch's entries become rows of a temporary table, so the merge join below can read them
  // sorted by task row; SQLite spills temporary tables to disk, so memory stays bounded.
  if (auto st = exec("DROP TABLE IF EXISTS temp.load_outcomes; CREATE TEMP TABLE load_outcomes "
                     "(task_row INTEGER NOT NULL, id TEXT NOT NULL, fields BLOB NOT NULL); BEGIN");
      !st) {
    return st;
  }
  using Stmt = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;
  Stmt read(nullptr, &sqlite3_finalize);
  Stmt write(nullptr, &sqlite3_finalize);
  auto fail = [&](Error e) -> Status {
    read.reset();  // finalized first: the rollback then has no statement in progress
    write.reset();
    (void)exec("ROLLBACK");
    return tl::unexpected(std::move(e));
  };
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT rowid, records FROM outcomes ORDER BY rowid", -1, &raw, nullptr) != SQLITE_OK) {
    return fail(error("load outcomes"));
  }
  read.reset(raw);
  if (sqlite3_prepare_v2(db_, "INSERT INTO temp.load_outcomes VALUES (?1, ?2, ?3)", -1, &raw, nullptr) != SQLITE_OK) {
    return fail(error("load outcomes"));
  }
  write.reset(raw);
  int rc;
  while ((rc = sqlite3_step(read.get())) == SQLITE_ROW) {
    const std::int64_t batch_row = sqlite3_column_int64(read.get(), 0);
    auto entries = journal_fields::decode_batch(column_view(read.get(), 1), path_ + ", outcome batch " + std::to_string(batch_row));
    if (!entries) return fail(entries.error());
    for (const auto& e : *entries) {
      sqlite3_bind_int64(write.get(), 1, e.task_row);
      bind_text(write.get(), 2, e.id);
      bind_blob(write.get(), 3, e.fields);
      if (step_once(write.get()) != SQLITE_DONE) return fail(error("load outcomes"));
    }
  }
  if (rc != SQLITE_DONE) return fail(error("load outcomes"));
  read.reset();
  write.reset();
  return exec("COMMIT");
}

Status Journal::load(const std::function<void(TaskRecord&&)>& fn) {
  // A merge join, streaming both tables: tasks in submission order, outcomes sorted by their
  // task's row (SQLite's sorter spills to temporary files), so memory does not grow with the
  // number of finished tasks a journal holds.
  if (auto st = stage_outcomes(); !st) return st;
  using Stmt = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;
  sqlite3_stmt* raw_tasks = nullptr;
  sqlite3_stmt* raw_outcomes = nullptr;
  constexpr const char* kLoadTasks =
      "SELECT id, request, idempotency_key, submitted_ms, tenant, rowid, fields FROM tasks ORDER BY rowid";
  if (sqlite3_prepare_v2(db_, kLoadTasks, -1, &raw_tasks, nullptr) != SQLITE_OK) return tl::unexpected(error("load"));
  Stmt tasks(raw_tasks, &sqlite3_finalize);
  constexpr const char* kLoadOutcomes = "SELECT task_row, fields, id FROM temp.load_outcomes ORDER BY task_row, rowid";
  if (sqlite3_prepare_v2(db_, kLoadOutcomes, -1, &raw_outcomes, nullptr) != SQLITE_OK) {
    return tl::unexpected(error("load outcomes"));
  }
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
    if (auto st = journal_fields::decode(column_view(t, 6), r, path_ + ", task row " + std::to_string(r.row)); !st) return st;
    // Outcomes of rows before this one have no task (a broker bug): ignored. This row's, in
    // the order they were written: the last one that names this task wins.
    for (; orc == SQLITE_ROW && sqlite3_column_int64(o, 0) <= r.row; orc = sqlite3_step(o)) {
      if (sqlite3_column_int64(o, 0) < r.row || column_view(o, 2) != r.id) {
        ++mismatched_outcomes_;
        continue;
      }
      if (auto st = journal_fields::decode(column_view(o, 1), r, path_ + ", outcome of task row " + std::to_string(r.row));
          !st) {
        return st;
      }
    }
    if (orc != SQLITE_ROW && orc != SQLITE_DONE) return tl::unexpected(error("load outcomes"));
    fn(std::move(r));
  }
  if (rc != SQLITE_DONE) return tl::unexpected(error("load"));
  for (; orc == SQLITE_ROW; orc = sqlite3_step(o)) ++mismatched_outcomes_;  // after the last task's row
  if (orc != SQLITE_DONE) return tl::unexpected(error("load outcomes"));
  tasks.reset();
  outcomes.reset();
  return exec("DROP TABLE temp.load_outcomes");
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
