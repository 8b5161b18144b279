#pragma once
// The encoding of what the journal stores per task in schema version 5 (schema.hpp): the fields a
// transition may change, as one msgpack array in one column, and the outcome batches, one row
// per commit holding every task that finished in it. One column instead of thirteen: SQLite's
// cost per row grows with its columns (a bind, a register copy and a record field each), and a
// commit finishing N tasks appends one row instead of N.
#include <cstdint>
#include <string_view>
#include <vector>

#include "broker/journal/task_record.hpp"
#include "common/errors/error.hpp"
#include "common/protocol/wire.hpp"

namespace kbfleet::broker::journal_fields {

// The mutable fields of `r` (state, attempt, worker, worker_name, version, started_ms,
// finished_ms, next_seq, max_attempts, retry_of, cancel_requested, outcome, artifacts) as one array.
void encode(protocol::Writer& w, const TaskRecordRef& r);
// Reads them back into `r`. IO_ERROR naming `where` when the bytes are not what encode() wrote.
[[nodiscard]] Status decode(std::string_view bytes, TaskRecord& r, std::string_view where);

// One finished task in an outcome batch: its row, its id (load() checks that the row holds this
// task) and its encoded fields.
struct OutcomeEntry {
  std::int64_t task_row = 0;
  std::string_view id;
  std::string_view fields;  // encode()'s bytes
};

// An outcome batch: an array of [task_row, id, fields] entries, built across one transaction.
class OutcomeBatch {
 public:
  bool empty() const { return entries_ == 0; }
  std::size_t size() const { return entries_; }
  std::int64_t latest_finish_ms() const { return latest_finish_ms_; }
  void add(const TaskRecordRef& r, protocol::Writer& scratch);
  // The encoded batch; add() may not be called again before clear().
  std::string_view finish();
  void clear();

 private:
  protocol::Writer w_;
  std::size_t entries_ = 0;
  std::int64_t latest_finish_ms_ = 0;
};

// The entries of an encoded batch, viewing into `bytes` (which must outlive them). IO_ERROR
// naming `where` when it is not a batch.
[[nodiscard]] Result<std::vector<OutcomeEntry>> decode_batch(std::string_view bytes, std::string_view where);

}  // namespace kbfleet::broker::journal_fields
