// Fuzzes the journal's stored encodings (broker/journal/fields.hpp): a task's packed fields and an
// outcome batch, as a damaged or hand-edited journal file could hold them. The first byte picks
// the decoder. Invariants checked (a failure traps): what decodes re-encodes into bytes that
// decode to the same record (fields: a fixed point; batch: the same rows and ids, in order).
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "broker/journal/fields.hpp"

namespace {

using namespace kbfleet::broker;

[[noreturn]] void invariant_failed(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  __builtin_trap();
}

std::string encoded(const TaskRecord& r) {
  kbfleet::protocol::Writer w;
  journal_fields::encode(w, ref_of(r));
  return std::string(w.bytes());
}

void fields(std::string_view bytes) {
  TaskRecord r;
  if (!journal_fields::decode(bytes, r, "fuzz")) return;
  const std::string once = encoded(r);
  TaskRecord again;
  if (!journal_fields::decode(once, again, "fuzz")) invariant_failed("re-encoded fields do not decode");
  if (encoded(again) != once) invariant_failed("encode(decode(encode(r))) != encode(r)");
}

void batch(std::string_view bytes) {
  auto entries = journal_fields::decode_batch(bytes, "fuzz");
  if (!entries) return;
  journal_fields::OutcomeBatch rebuilt;
  kbfleet::protocol::Writer scratch;
  std::size_t kept = 0;
  for (const auto& e : *entries) {
    TaskRecord r;
    if (!journal_fields::decode(e.fields, r, "fuzz")) continue;  // load() would stop with IO_ERROR
    r.row = e.task_row;
    r.id = std::string(e.id);
    rebuilt.add(ref_of(r), scratch);
    ++kept;
  }
  if (kept == 0) return;
  const std::string again_bytes(rebuilt.finish());
  auto again = journal_fields::decode_batch(again_bytes, "fuzz");
  if (!again) invariant_failed("a rebuilt batch does not decode");
  if (again->size() != kept) invariant_failed("a rebuilt batch has another number of entries");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    batch(rest);
  } else {
    fields(rest);
  }
  return 0;
}
