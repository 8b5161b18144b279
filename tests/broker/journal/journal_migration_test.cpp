// Issue #7: schema version 2 adds the tenant column; a version-1 journal is migrated in place and
// its tasks belong to the implicit tenant "default" (broker/journal/journal.cpp).
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "broker/journal/journal.hpp"
#include "tests/support/process.hpp"

namespace kbfleet::broker {

TEST_CASE("issue 7: a version-1 journal is migrated and its tasks belong to tenant default", "[broker][journal]") {
  const std::string dir = test::make_temp_dir();
  const std::string path = dir + "/journal.db";
  {
    // The version-1 schema and one task, as a broker before issue #7 wrote them.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    const char* v1 =
        "CREATE TABLE tasks (id TEXT PRIMARY KEY NOT NULL, request BLOB NOT NULL, idempotency_key TEXT NOT NULL, "
        "state TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL, "
        "version TEXT NOT NULL, submitted_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT "
        "NULL, next_seq INTEGER NOT NULL, max_attempts INTEGER NOT NULL, retry_of TEXT NOT NULL, cancel_requested "
        "INTEGER NOT NULL, outcome BLOB NOT NULL, artifacts BLOB NOT NULL);"
        "INSERT INTO tasks VALUES ('old', x'80', '', 'queued', 0, '', '', '', 1, 0, 0, 1, 1, '', 0, x'', x'');"
        "PRAGMA user_version = 1;";
    REQUIRE(sqlite3_exec(db, v1, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto j = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(j.has_value());
  std::vector<TaskRecord> got;
  REQUIRE((*j)->load([&](TaskRecord&& r) { got.push_back(std::move(r)); }));
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == "old");
  CHECK(got[0].tenant == "default");
  // New records keep their tenant, and so do updates of migrated ones.
  TaskRecord fresh;
  fresh.id = "new";
  fresh.request = std::string("\x80", 1);
  fresh.state = "queued";
  fresh.tenant = "acme";
  REQUIRE((*j)->insert(fresh));
  got[0].state = "succeeded";
  got[0].finished_ms = 5;
  REQUIRE((*j)->update(got[0]));
  REQUIRE((*j)->commit());
  j->reset();
  auto again = Journal::open({path, Durability::kBatch, 0});
  REQUIRE(again.has_value());
  got.clear();
  REQUIRE((*again)->load([&](TaskRecord&& r) { got.push_back(std::move(r)); }));
  REQUIRE(got.size() == 2);
  CHECK(got[0].state == "succeeded");
  CHECK(got[0].tenant == "default");
  CHECK(got[1].tenant == "acme");
  again->reset();
  test::remove_tree(dir);
}

}  // namespace kbfleet::broker
