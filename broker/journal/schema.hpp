#pragma once
// The journal's tables (docs/operations.md, "Schema") and the migration of journals that older
// brokers wrote. Each migration step moves a journal up one version in one transaction with its
// version bump (SQLite DDL is transactional), so a crash or a failed step leaves the journal at
// the version before that step, never between two versions. Steps also accept the half-migrated
// journals that brokers before this rule could leave behind (a column added, version not bumped).
#include <string>

#include "common/errors/error.hpp"

struct sqlite3;

namespace kbfleet::broker::journal_schema {

// 2: the `tenant` column (issue #7). 3: `id` is no longer a primary key: rows are updated by
// rowid, which the broker keeps per task, so a commit dirties no page of a random-keyed index
// (ids are 128 random bits; unique by construction). 4: a task's terminal state is appended to
// `outcomes` instead of rewriting its row (issue #6). 5: the fields a transition changes are one
// msgpack column (`fields`), and `outcomes` holds one row per commit with every task that
// finished in it (journal_fields, issue #6).
inline constexpr int kVersion = 5;

// Brings the journal `db` (opened, exclusively locked) to kVersion: creates the tables of a new
// one, migrates an older one step by step. IO_ERROR naming `path`: a newer schema than
// kVersion, a file with tables but no schema version, or a failed step (rolled back).
[[nodiscard]] Status migrate(sqlite3* db, const std::string& path);

}  // namespace kbfleet::broker::journal_schema
