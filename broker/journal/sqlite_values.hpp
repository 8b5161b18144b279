#pragma once
// Moving bytes between std::string_view and SQLite statements, for the journal and its
// migrations: binds that never turn an empty view into NULL, and column reads that copy or view.
#include <sqlite3.h>

#include <string>
#include <string_view>

namespace kbfleet::broker::sqlite_values {

// An empty view may have no data pointer, which SQLite would bind as NULL: bind "" instead.
// SQLITE_STATIC: the bytes must stay alive until the statement is reset.
inline void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data() != nullptr ? v.data() : "", static_cast<int>(v.size()), SQLITE_STATIC);
}
inline void bind_blob(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_blob(s, i, v.data() != nullptr ? v.data() : "", static_cast<int>(v.size()), SQLITE_STATIC);
}

// Column `i` of the current row as a view, valid until the statement steps or resets.
inline std::string_view column_view(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  const int n = sqlite3_column_bytes(s, i);
  return p == nullptr ? std::string_view() : std::string_view(static_cast<const char*>(p), static_cast<std::size_t>(n));
}
inline std::string column_bytes(sqlite3_stmt* s, int i) { return std::string(column_view(s, i)); }

}  // namespace kbfleet::broker::sqlite_values
