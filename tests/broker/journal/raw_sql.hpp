#pragma once
// Raw SQL on a closed journal file, as an operator with `sqlite3` (or an older broker, or a
// damaged disk) would touch it: the journal tests write old schemas and read what was stored.
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

namespace kbfleet::broker::raw_sql {

inline void exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

// The first column of the first row of `sql`; -1 without a row.
inline std::int64_t scalar(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
  const std::int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

}  // namespace kbfleet::broker::raw_sql
