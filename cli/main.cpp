// kbfleet: the command-line client. Parses arguments with CLI11 and calls cli/commands.
#include <signal.h>

#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "common/posix/signals.hpp"
#include "common/posix/heap.hpp"

namespace {

void add_submit_options(CLI::App* cmd, kbfleet::cli::SubmitArgs& a, std::vector<std::string>& env) {
  cmd->add_option("plugin", a.plugin, "PLUGIN[@VERSION]")->required();
  cmd->add_option("handler", a.handler, "handler name")->required();
  cmd->add_option("--input,-i", a.input, "input as JSON, or @file.json");
  cmd->add_option("--env,-e", env, "NAME=VALUE for the handler (the manifest must allow NAME)");
  cmd->add_option("--priority", a.priority, "higher runs first")->capture_default_str();
  cmd->add_option("--timeout", a.timeout_ms, "timeout in ms (default: the manifest's quota)");
  cmd->add_option("--max-attempts", a.max_attempts,
                  "attempts if workers are lost (default: 3 for idempotent handlers, else 1)")
      ->check(CLI::Range(1, 10));
  cmd->add_option("--idempotency-key", a.idempotency_key, "a second submit with this key returns the first task");
}

}  // namespace

int main(int argc, char** argv) {
  kbfleet::posix::keep_freed_heap();  // artifact chunks reuse their memory (common/posix/heap.hpp)
  using kbfleet::cli::Format;
  const char* env_broker = std::getenv("KBFLEET_BROKER");
  std::string broker = env_broker && *env_broker ? env_broker : "tcp://127.0.0.1:7700";
  std::int64_t timeout_ms = 5000;
  const char* env_key = std::getenv("KBFLEET_KEY");
  const char* env_broker_key = std::getenv("KBFLEET_BROKER_KEY");
  std::string key_file = env_key ? env_key : "";
  std::string broker_key_file = env_broker_key ? env_broker_key : "";
  kbfleet::cli::SubmitArgs submit_args;
  std::vector<std::string> env;
  std::string id, name, out;
  bool json = false;

  CLI::App app{"kbfleet: run plugin handlers on a kbfleet fleet"};
  app.require_subcommand(1);
  app.add_option("--broker", broker, "broker endpoint (default $KBFLEET_BROKER or tcp://127.0.0.1:7700)");
  app.add_option("--request-timeout", timeout_ms, "ms to wait for each broker answer")->capture_default_str();
  app.add_option("--key", key_file, "this client's secret certificate for CURVE (default $KBFLEET_KEY)");
  app.add_option("--broker-key", broker_key_file, "the broker's public certificate (default $KBFLEET_BROKER_KEY)");
  std::string keygen_name;
  auto* keygen = app.add_subcommand("keygen", "write a CURVE key pair: NAME.key (secret, 0600) and NAME.pub (0644)");
  keygen->add_option("name", keygen_name, "path prefix of the two files")->required();

  auto* run = app.add_subcommand("run", "run a handler and stream its output; exits with its status");
  add_submit_options(run, submit_args, env);
  auto* submit = app.add_subcommand("submit", "queue a handler run and print its task id");
  add_submit_options(submit, submit_args, env);
  auto* status = app.add_subcommand("status", "show a task's state and result");
  status->add_option("id", id, "task id")->required();
  status->add_flag("--json", json, "machine-readable output");
  auto* tail = app.add_subcommand("tail", "print a task's output from its first line until it ends");
  tail->add_option("id", id, "task id")->required();
  tail->add_flag("--json", json, "print every event as a JSON line");
  auto* cancel = app.add_subcommand("cancel", "cancel a queued or running task");
  cancel->add_option("id", id, "task id")->required();
  auto* retry = app.add_subcommand("retry", "submit a dead-lettered task again; prints the new task id");
  retry->add_option("id", id, "task id")->required();
  auto* artifacts = app.add_subcommand("artifacts", "list or fetch a task's artifacts");
  artifacts->require_subcommand(1);
  auto* ls = artifacts->add_subcommand("ls", "list a task's artifacts");
  ls->add_option("id", id, "task id")->required();
  ls->add_flag("--json", json, "machine-readable output");
  auto* get = artifacts->add_subcommand("get", "download an artifact and verify its sha256");
  get->add_option("id", id, "task id")->required();
  get->add_option("name", name, "artifact id from the manifest")->required();
  get->add_option("-o,--output", out, "file to write (- for stdout)")->required();
  bool fsync_out = false;
  get->add_flag("--fsync", fsync_out, "fsync the file before renaming it into place (durable against power loss; waits for the disk)");
  auto* workers = app.add_subcommand("workers", "list connected workers and their plugins");
  workers->add_flag("--json", json, "machine-readable output");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kbfleet::cli::kExitUsage;
  }
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "kbfleet: --env expects NAME=VALUE, got '" << kv << "'\n";
      return kbfleet::cli::kExitUsage;
    }
    submit_args.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }

  if (*keygen) return kbfleet::cli::cmd_keygen(keygen_name);
  auto keys = kbfleet::transport::load_client_keys(key_file, broker_key_file);
  if (!keys) {
    std::cerr << "kbfleet: " << keys.error().to_string() << "\n";
    return kbfleet::cli::kExitConfig;
  }

  // SIGINT arrives through a signalfd so `run` can cancel the task instead of dying.
  auto interrupt = kbfleet::posix::signal_fd({SIGINT});
  const int interrupt_fd = interrupt ? interrupt->get() : -1;

  kbfleet::cli::Client client(broker, std::chrono::milliseconds(timeout_ms), std::move(*keys));
  const Format f = json ? Format::kJson : Format::kText;
  if (*run) return kbfleet::cli::cmd_run(client, submit_args, interrupt_fd);
  if (*submit) return kbfleet::cli::cmd_submit(client, submit_args);
  if (*status) return kbfleet::cli::cmd_status(client, id, f);
  if (*tail) return kbfleet::cli::cmd_tail(client, id, f, interrupt_fd);
  if (*cancel) return kbfleet::cli::cmd_cancel(client, id);
  if (*retry) return kbfleet::cli::cmd_retry(client, id);
  if (*ls) return kbfleet::cli::cmd_artifacts_ls(client, id, f);
  if (*get) {
    return kbfleet::cli::cmd_artifacts_get(client, id, name, out,
                                           fsync_out ? kbfleet::cli::FileSync::kFsync : kbfleet::cli::FileSync::kNone);
  }
  if (*workers) return kbfleet::cli::cmd_workers(client, f);
  return kbfleet::cli::kExitUsage;
}
