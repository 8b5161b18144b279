#pragma once
// Copies the journal's WAL into its database on a thread of its own, through a second SQLite
// connection, so that a checkpoint's page copies and its two fdatasyncs (WAL, then database) do
// not stall the broker's loop (docs/performance.md, "Durability (sixth round)").
//
// Synchronisation: the thread uses only its own connection; the loop's connection and this one
// coordinate through SQLite's WAL locks and wal-index, kept in process memory by the "unix-excl"
// VFS (no fcntl per transaction, unlike a -shm file). A passive checkpoint copies only committed
// frames up to the last commit it sees when it starts, and never takes the writer lock, so the
// loop keeps committing while it runs. The request flag, the pass counter and the last error are
// guarded by mu_; the finished flag is an atomic the loop polls every turn. The WAL can only be
// restarted from its start once every frame is copied, which a pass running beside commits never
// achieves: Journal copies the short tail committed during a pass itself
// (Journal::finish_checkpoint) right after the pass ends.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/errors/error.hpp"

struct sqlite3;

namespace kbfleet::broker {

class Checkpointer {
 public:
  // Opens a second connection on the WAL journal at `path` (already opened, migrated and put in
  // WAL mode by Journal on the "unix-excl" VFS) with the same `synchronous` pragma, and starts
  // the thread. IO_ERROR.
  [[nodiscard]] static Result<std::unique_ptr<Checkpointer>> start(const std::string& path, const char* synchronous_pragma);
  // Waits for a pass in progress, stops the thread and closes its connection.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Asks for one passive checkpoint and returns at once (a pass already asked for or running
  // absorbs it). Returns the error of a pass that failed since the last call, once.
  [[nodiscard]] Status request();
  // True once after each finished pass (the caller then copies the tail).
  bool take_finished();
  std::uint64_t passes() const;

 private:
  explicit Checkpointer(sqlite3* db) : db_(db) {}
  void run();
  std::optional<Error> pass();

  sqlite3* db_;
  int sync_flags_ = 0;  // SQLITE_SYNC_NORMAL or _FULL, as the writer's synchronous
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool requested_ = false;
  bool stop_ = false;
  std::atomic<bool> finished_ = false;  // polled by the loop every turn: no lock
  std::uint64_t passes_ = 0;
  std::optional<Error> error_;
  std::thread thread_;
};

}  // namespace kbfleet::broker
