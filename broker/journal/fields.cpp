#include "broker/journal/fields.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <climits>

namespace kbfleet::broker::journal_fields {
namespace {

constexpr std::uint32_t kFieldCount = 13;
constexpr std::uint32_t kEntryCount = 3;

// Strings and binaries of the decoded object point into the input (no copy into the zone): the
// batch's entries are views of the column's bytes.
bool reference_all(msgpack::type::object_type, std::size_t, void*) { return true; }

Error malformed(std::string_view where, std::string_view what) {
  return Error{ErrorCode::kIoError,
               "journal " + std::string(where) + ": " + std::string(what) +
                   " (the journal is damaged or was not written by kbfleet-broker; move it away to start empty)",
               {}};
}

Result<msgpack::object_handle> unpack(std::string_view bytes, std::string_view where) {
  try {
    std::size_t off = 0;
    // No element can be smaller than a byte, so no count above the column's size is genuine: a
    // damaged header cannot make the unpacker allocate more than the bytes justify.
    const std::size_t n = bytes.size();
    auto h = msgpack::unpack(bytes.data(), n, off, reference_all, nullptr, msgpack::unpack_limit(n, 0, n, n, 0, 4));
    if (off != bytes.size()) return tl::unexpected(malformed(where, "trailing bytes"));
    return h;
  } catch (const std::exception& e) {
    return tl::unexpected(malformed(where, std::string("unreadable msgpack: ") + e.what()));
  }
}

bool is_bytes(const msgpack::object& o) { return o.type == msgpack::type::STR || o.type == msgpack::type::BIN; }

std::string bytes_of(const msgpack::object& o) {
  return o.type == msgpack::type::STR ? std::string(o.via.str.ptr, o.via.str.size)
                                      : std::string(o.via.bin.ptr, o.via.bin.size);
}

bool is_int(const msgpack::object& o) {
  return o.type == msgpack::type::NEGATIVE_INTEGER ||
         (o.type == msgpack::type::POSITIVE_INTEGER && o.via.u64 <= static_cast<std::uint64_t>(INT64_MAX));
}

std::int64_t int_of(const msgpack::object& o) {  // after is_int
  return o.type == msgpack::type::POSITIVE_INTEGER ? static_cast<std::int64_t>(o.via.u64) : o.via.i64;
}

}  // namespace

void encode(protocol::Writer& w, const TaskRecordRef& r) {
  w.begin_array()
      .str(r.state)
      .i64(r.attempt)
      .str(r.worker)
      .str(r.worker_name)
      .str(r.version)
      .i64(r.started_ms)
      .i64(r.finished_ms)
      .i64(r.next_seq)
      .i64(r.max_attempts)
      .str(r.retry_of)
      .boolean(r.cancel_requested)
      .bin(r.outcome)
      .bin(r.artifacts)
      .end_array();
}

Status decode(std::string_view bytes, TaskRecord& r, std::string_view where) {
  auto h = unpack(bytes, where);
  if (!h) return tl::unexpected(h.error());
  const msgpack::object& o = h->get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != kFieldCount) {
    return tl::unexpected(malformed(where, "the task's fields are not an array of 13"));
  }
  const msgpack::object* f = o.via.array.ptr;
  for (std::uint32_t i : {0u, 2u, 3u, 4u, 9u, 11u, 12u}) {
    if (!is_bytes(f[i])) return tl::unexpected(malformed(where, "field " + std::to_string(i) + " is not a string"));
  }
  for (std::uint32_t i : {1u, 5u, 6u, 7u, 8u}) {
    if (!is_int(f[i])) return tl::unexpected(malformed(where, "field " + std::to_string(i) + " is not an integer"));
  }
  if (f[10].type != msgpack::type::BOOLEAN) return tl::unexpected(malformed(where, "field 10 is not a boolean"));
  r.state = bytes_of(f[0]);
  r.attempt = int_of(f[1]);
  r.worker = bytes_of(f[2]);
  r.worker_name = bytes_of(f[3]);
  r.version = bytes_of(f[4]);
  r.started_ms = int_of(f[5]);
  r.finished_ms = int_of(f[6]);
  r.next_seq = int_of(f[7]);
  r.max_attempts = int_of(f[8]);
  r.retry_of = bytes_of(f[9]);
  r.cancel_requested = f[10].via.boolean;
  r.outcome = bytes_of(f[11]);
  r.artifacts = bytes_of(f[12]);
  return {};
}

void OutcomeBatch::add(const TaskRecordRef& r, protocol::Writer& scratch) {
  if (entries_ == 0) w_.begin_array();
  scratch.reset();
  encode(scratch, r);
  w_.begin_array().i64(r.row).str(r.id).bin(scratch.bytes()).end_array();
  ++entries_;
  latest_finish_ms_ = std::max(latest_finish_ms_, r.finished_ms);
}

std::string_view OutcomeBatch::finish() {
  w_.end_array();
  return w_.bytes();
}

void OutcomeBatch::clear() {
  w_.reset();
  entries_ = 0;
  latest_finish_ms_ = 0;
}

Result<std::vector<OutcomeEntry>> decode_batch(std::string_view bytes, std::string_view where) {
  auto h = unpack(bytes, where);
  if (!h) return tl::unexpected(h.error());
  const msgpack::object& o = h->get();
  if (o.type != msgpack::type::ARRAY) return tl::unexpected(malformed(where, "the outcome batch is not an array"));
  std::vector<OutcomeEntry> out;
  out.reserve(o.via.array.size);
  for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
    const msgpack::object& e = o.via.array.ptr[i];
    if (e.type != msgpack::type::ARRAY || e.via.array.size != kEntryCount || !is_int(e.via.array.ptr[0]) ||
        e.via.array.ptr[1].type != msgpack::type::STR || e.via.array.ptr[2].type != msgpack::type::BIN) {
      return tl::unexpected(malformed(where, "outcome " + std::to_string(i) + " is not [row, id, fields]"));
    }
    const msgpack::object* p = e.via.array.ptr;
    out.push_back({int_of(p[0]), std::string_view(p[1].via.str.ptr, p[1].via.str.size),
                   std::string_view(p[2].via.bin.ptr, p[2].via.bin.size)});
  }
  return out;
}

}  // namespace kbfleet::broker::journal_fields
