#include "broker/journal/checkpointer.hpp"

#include <sqlite3.h>

namespace kbfleet::broker {
namespace {

Error sqlite_error(sqlite3* db, const std::string& path, std::string_view what) {
  return Error{ErrorCode::kIoError, "journal " + path + ": " + std::string(what) + ": " + sqlite3_errmsg(db),
               {{"sqlite_code", std::to_string(sqlite3_extended_errcode(db))}}};
}

}  // namespace

Result<std::unique_ptr<Checkpointer>> Checkpointer::start(const std::string& path, const char* synchronous_pragma) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                                 "unix-excl");
  std::unique_ptr<Checkpointer> c(new Checkpointer(db));
  c->sync_flags_ = std::string_view(synchronous_pragma).ends_with("FULL") ? SQLITE_SYNC_FULL : SQLITE_SYNC_NORMAL;
  if (rc != SQLITE_OK) {
    return make_error(ErrorCode::kIoError,
                      "journal " + path + ": checkpoint connection: " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) +
                          " (check --data and its permissions, and that the disk is not full)");
  }
  // The checkpoint's syncs follow this connection's setting: the same as the writer's, so a
  // checkpoint is exactly as safe against power loss as it was on the loop. Reading the schema
  // opens the WAL (and the in-process wal-index the writer already built).
  const std::string setup = std::string(synchronous_pragma) + "; SELECT count(*) FROM sqlite_schema";
  if (sqlite3_exec(db, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return tl::unexpected(sqlite_error(db, path, "checkpoint connection"));
  }
  c->thread_ = std::thread([p = c.get()] { p->run(); });
  return c;
}

Checkpointer::~Checkpointer() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  // Closing cannot checkpoint or delete the WAL: the writer's connection still holds its shared
  // lock on the database.
  sqlite3_close_v2(db_);
}

Status Checkpointer::request() {
  std::optional<Error> failed;
  {
    std::lock_guard lock(mu_);
    requested_ = true;
    failed.swap(error_);
  }
  wake_.notify_one();
  if (failed) return tl::unexpected(std::move(*failed));
  return {};
}

bool Checkpointer::take_finished() {
  // A plain load first: the loop polls every turn, and an exchange is a locked instruction.
  return finished_.load(std::memory_order_relaxed) && finished_.exchange(false, std::memory_order_acquire);
}

std::uint64_t Checkpointer::passes() const {
  std::lock_guard lock(mu_);
  return passes_;
}

std::optional<Error> Checkpointer::pass() {
  // Two rounds: the second copies what was committed during the first (a short stretch), so the
  // tail left to the loop's finish_checkpoint is shorter still. Each round is PASSIVE (no busy
  // wait, no writer lock): it syncs the WAL, then copies the frames committed before it began.
  for (int round = 0; round < 2; ++round) {
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    // BUSY: the loop is copying a tail (Journal::finish_checkpoint) and holds the checkpoint
    // lock; it copies what this round would have.
    if (rc == SQLITE_BUSY) return std::nullopt;
    if (rc != SQLITE_OK) return sqlite_error(db_, sqlite3_db_filename(db_, "main"), "checkpoint");
    // SQLite syncs the database only after a round that copied the whole WAL, which never
    // happens beside commits, so the loop's tail round would flush everything this round wrote.
    // Flush it here; the tail round's own sync then finds little left (the order SQLite needs,
    // database durable before the WAL restarts, is unchanged: that sync still comes first).
    sqlite3_file* file = nullptr;
    if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK || file == nullptr ||
        file->pMethods == nullptr) {
      return sqlite_error(db_, sqlite3_db_filename(db_, "main"), "checkpoint: database file");
    }
    if (file->pMethods->xSync(file, sync_flags_) != SQLITE_OK) {
      return sqlite_error(db_, sqlite3_db_filename(db_, "main"), "checkpoint: sync the database");
    }
  }
  return std::nullopt;
}

void Checkpointer::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stop_ || requested_; });
    if (stop_) return;
    requested_ = false;
    lock.unlock();
    std::optional<Error> failed = pass();
    lock.lock();
    if (failed) error_ = std::move(failed);
    ++passes_;
    finished_.store(true, std::memory_order_release);
  }
}

}  // namespace kbfleet::broker
