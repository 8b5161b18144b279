#pragma once
// Test support: a real broker and N real workers on loopback ephemeral ports, with the example
// and fixture plugins, plus the real `kbfleet` CLI to drive them.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace kbfleet::test {

using namespace std::chrono_literals;

struct FleetOptions {
  // A constructor rather than an aggregate, so `Fleet fleet({1, 1, {}})` stays valid (and free of
  // -Wmissing-field-initializers) as fields are added below.
  FleetOptions(int workers = 2, int slots = 2, std::vector<std::string> worker_args = {})
      : workers(workers), slots(slots), worker_args(std::move(worker_args)) {}

  int workers;
  int slots;
  std::vector<std::string> worker_args;  // extra flags for every worker
  // Called with the plugins directory after the example and fixture plugins are copied there and
  // before any worker scans it: a test adds plugins it builds at run time.
  std::function<void(const std::string& plugins_dir)> add_plugins;
  std::map<std::string, std::string> worker_env;  // added to every worker's environment
  std::vector<std::string> broker_args;  // extra flags for the broker (also on start_broker())
  std::map<std::string, std::string> cli_env;  // every cli() call's environment (e.g. KBFLEET_KEY)
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options = {});
  ~Fleet();

  // Runs `kbfleet --broker <ep> args...`.
  CommandResult cli(const std::vector<std::string>& args, std::chrono::milliseconds deadline = 60s,
                    const std::map<std::string, std::string>& env = {}) const;
  // Polls `kbfleet workers --json` until `n` workers are registered; false at the deadline.
  bool wait_for_workers(std::size_t n, std::chrono::milliseconds deadline = 20s) const;
  // Polls `kbfleet status --json` until the task is terminal (not queued, running or retrying);
  // returns its state ("" on deadline).
  std::string wait_for_terminal(const std::string& task_id, std::chrono::milliseconds deadline = 60s) const;
  // Polls `kbfleet status --json` until the task runs and has at least `events` events (2 =
  // started + the handler's first line); returns the id of its worker ("" at the deadline).
  std::string wait_until_running(const std::string& task_id, int events = 2,
                                 std::chrono::milliseconds deadline = 30s) const;
  // Starts one more worker ("w<N>") with the fleet's worker flags plus `extra_args`.
  void add_worker(const std::vector<std::string>& extra_args = {});
  // SIGKILL of the worker started with --worker-id `name` ("w0", "w1", ...).
  void kill_worker(const std::string& name);

  void start_broker(const std::string& bind = "tcp://127.0.0.1:*");
  void stop_broker();  // SIGKILL

  std::string dir;      // temp dir holding data/, work-N/, plugins/, logs
  std::string broker;   // tcp://127.0.0.1:PORT
  std::string events;
  std::string broker_metrics;  // 127.0.0.1:PORT
  std::vector<std::string> worker_metrics;
  std::vector<std::string> work_dirs;  // canonical --work of each worker; workspaces are <work>/<task>-<attempt>
  std::vector<std::unique_ptr<Daemon>> workers;
  std::unique_ptr<Daemon> broker_process;

 private:
  FleetOptions options_;
};

std::string bin(const std::string& name);  // path of a built binary
std::string source_path(const std::string& relative);

}  // namespace kbfleet::test
