#pragma once
// The `kbfleet` subcommands. Each returns the process exit code (cli/exit_codes.hpp) and prints
// errors as "kbfleet: CODE: message" on stderr.
#include <map>
#include <string>

#include "cli/client.hpp"

namespace kbfleet::cli {

struct SubmitArgs {
  std::string plugin;  // PLUGIN[@VERSION]
  std::string handler;
  std::string input;   // JSON text or @file.json
  std::map<std::string, std::string> env;
  std::int64_t priority = 0;
  std::int64_t timeout_ms = 0;
  std::string idempotency_key;
  std::int64_t max_attempts = 0;
};

enum class Format { kText, kJson };

int cmd_run(Client& c, const SubmitArgs& a, int interrupt_fd);
int cmd_submit(Client& c, const SubmitArgs& a);
int cmd_status(Client& c, const std::string& id, Format f);
int cmd_tail(Client& c, const std::string& id, Format f, int interrupt_fd);
int cmd_cancel(Client& c, const std::string& id);
int cmd_retry(Client& c, const std::string& id);
int cmd_artifacts_ls(Client& c, const std::string& id, Format f);
// Whether `artifacts get -o FILE` fsyncs FILE before renaming it into place (--fsync).
enum class FileSync { kNone, kFsync };
int cmd_artifacts_get(Client& c, const std::string& id, const std::string& name, const std::string& out,
                      FileSync sync = FileSync::kNone);
int cmd_workers(Client& c, Format f);
// Writes <base>.key (0600) and <base>.pub (0644) and prints the public key; 74 if a file exists.
int cmd_keygen(const std::string& base);

}  // namespace kbfleet::cli
