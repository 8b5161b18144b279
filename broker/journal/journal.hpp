#pragma once
// The broker's durable journal: one SQLite database (WAL mode) holding a row per task the broker
// accepted and, appended by each commit, the outcomes of the tasks that finished in it, so a
// restarted broker can recover queued and running tasks, finished outcomes and idempotency keys
// (docs/operations.md, "Durability and recovery").
//
// Guarantees:
// - A record is durable once commit() returned success: with kBatch (synchronous=NORMAL) it
//   survives a crash of the broker process (kill -9) but may lose the last commits on power loss;
//   with kFsync (synchronous=FULL) every commit is fsynced and survives power loss.
// - Records written since the last commit are all-or-nothing: a crash or a failed commit loses
//   them together (the broker holds their replies until commit, so nobody saw them).
// - Only one Journal opens a file at a time (the "unix-excl" VFS's fcntl lock, held from the
//   first read to close, and a claim within the process): a second broker on the same data
//   directory gets IO_ERROR.
// Not thread-safe: the broker's poll loop is its only user. Checkpoints run on a thread of the
// journal's own (checkpointer.hpp), which callers do not see.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "broker/journal/fields.hpp"
#include "broker/journal/task_record.hpp"
#include "common/errors/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace kbfleet::broker {

class Checkpointer;

// This process's claim on a journal file (its device and inode), released on destruction.
struct JournalClaim {
  JournalClaim() = default;
  JournalClaim(JournalClaim&& o) noexcept : dev(o.dev), ino(o.ino), held(std::exchange(o.held, false)) {}
  JournalClaim& operator=(JournalClaim&&) = delete;
  ~JournalClaim();
  dev_t dev = 0;
  ino_t ino = 0;
  bool held = false;
};

// --durability: none = no journal (state in memory only); batch = WAL, synchronous=NORMAL;
// fsync = WAL, synchronous=FULL.
enum class Durability { kNone, kBatch, kFsync };
[[nodiscard]] Result<Durability> parse_durability(std::string_view name);
std::string_view durability_name(Durability d);


class Journal {
 public:
  struct Options {
    std::string path;  // the database file; its directory must exist
    Durability durability = Durability::kBatch;
    std::int64_t max_pages = 0;  // > 0 caps the database size (tests simulate a full disk)
  };

  // Opens or creates the journal and its schema. IO_ERROR naming the file when it cannot be
  // opened, is locked by another broker, is not a kbfleet journal or has a newer schema.
  [[nodiscard]] static Result<std::unique_ptr<Journal>> open(const Options& options);
  // Closes without committing: records written since the last commit are lost, as in a crash.
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Writes into the open transaction (begun on the first write after a commit); returns the
  // row, which update() needs. IO_ERROR.
  [[nodiscard]] Result<std::int64_t> insert(const TaskRecordRef& r);
  [[nodiscard]] Result<std::int64_t> insert(const TaskRecord& r) { return insert(ref_of(r)); }
  // Records the mutable fields (everything but id, request, submitted_ms, idempotency_key,
  // tenant) of row `r.row`, which must hold task `r.id`: a terminal state (finished_ms > 0) is
  // appended as the task's outcome, which is final (load() ignores one whose row does not hold
  // the task); any other state rewrites the row. IO_ERROR; INTERNAL if a rewritten row does not
  // hold the task, or the record has no row.
  [[nodiscard]] Status update(const TaskRecordRef& r);
  [[nodiscard]] Status update(const TaskRecord& r) { return update(ref_of(r)); }
  // Deletes at most `limit` tasks finished at or before `finished_before_ms`, oldest finish
  // first, stopping at the first one finished later; returns how many. Tasks that finished in one
  // commit go together (the first such group even if it holds more than `limit`). Opens no transaction
  // when there is nothing to delete.
  [[nodiscard]] Result<std::size_t> compact(std::int64_t finished_before_ms, std::size_t limit);

  // Makes every write since the last commit durable (one transaction = group commit). A no-op
  // without pending writes. On IO_ERROR the pending writes are rolled back.
  [[nodiscard]] Status commit();
  void rollback();
  std::size_t pending_records() const { return pending_; }

  // Calls fn for every journalled task in insertion (= submission) order, streaming (memory does
  // not grow with the journal). IO_ERROR. An outcome whose row holds another task or none (a
  // broker bug) is ignored and counted in ignored_outcomes(): that task keeps its row's state.
  [[nodiscard]] Status load(const std::function<void(TaskRecord&&)>& fn);
  std::size_t ignored_outcomes() const { return mismatched_outcomes_; }
  // Copies the WAL into the database and truncates it (at shutdown).
  [[nodiscard]] Status checkpoint();
  // Asks the checkpoint thread to copy the WAL into the database (the broker's timer, once a
  // second; there is no automatic checkpoint) and returns at once. IO_ERROR: a previous pass
  // failed (the WAL keeps the data; the next request tries again).
  [[nodiscard]] Status checkpoint_passive();
  // After the checkpoint thread finished a pass: copies on the caller's thread what was committed
  // during that pass (a short tail, with its two syncs), so that the next commit restarts the WAL
  // from its start instead of growing it. A no-op otherwise, or inside an open transaction. The
  // broker calls it after each turn's replies are sent. IO_ERROR.
  [[nodiscard]] Status finish_checkpoint();
  // Passes the checkpoint thread finished (tests).
  std::uint64_t checkpoint_passes() const;

  Durability durability() const { return durability_; }
  const std::string& path() const { return path_; }

 private:
  Journal(sqlite3* db, JournalClaim claim, std::string path, Durability d);
  [[nodiscard]] Status exec(const char* sql);
  [[nodiscard]] Status stage_outcomes();
  [[nodiscard]] Status no_row(const TaskRecordRef& r) const;
  [[nodiscard]] Status prepare_all();
  [[nodiscard]] Status begin_if_needed();
  Error error(std::string_view what) const;
  [[nodiscard]] Status failed(std::string_view what);

  sqlite3* db_;
  JournalClaim claim_;
  std::unique_ptr<Checkpointer> checkpointer_;  // null once stopped by checkpoint()
  std::string path_;
  Durability durability_;
  bool in_transaction_ = false;
  std::size_t pending_ = 0;
  std::size_t mismatched_outcomes_ = 0;
  protocol::Writer fields_;  // one row's fields, encoded (kept: no allocation per row)
  journal_fields::OutcomeBatch batch_;  // this transaction's finished tasks, appended by commit()
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* update_ = nullptr;
  sqlite3_stmt* outcomes_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* compact_scan_ = nullptr;
  sqlite3_stmt* compact_task_ = nullptr;
  sqlite3_stmt* compact_outcomes_ = nullptr;
};

}  // namespace kbfleet::broker
