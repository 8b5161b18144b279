#include "tests/support/fleet.hpp"

#include <signal.h>

#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace kbfleet::test {

std::string bin(const std::string& name) { return std::string(KBFLEET_BIN_DIR) + "/" + name; }
std::string source_path(const std::string& relative) { return std::string(KBFLEET_SOURCE_DIR) + "/" + relative; }

namespace {

// Workers take one plugins directory: gather the examples and the test fixtures into one.
void gather_plugins(const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  fs::create_directories(to);
  for (const char* from : {"examples/plugins", "tests/fixtures/plugins"}) {
    for (const auto& entry : fs::directory_iterator(source_path(from))) {
      if (!entry.is_directory()) continue;
      fs::copy(entry.path(), to / entry.path().filename(), fs::copy_options::recursive);
    }
  }
}

}  // namespace

Fleet::Fleet(FleetOptions options) : options_(std::move(options)) {
  dir = make_temp_dir();
  gather_plugins(std::filesystem::path(dir) / "plugins");
  if (options_.add_plugins) options_.add_plugins(dir + "/plugins");
  start_broker();
  for (int i = 0; i < options_.workers; ++i) add_worker();
}

void Fleet::add_worker(const std::vector<std::string>& extra_args) {
  const std::string n = std::to_string(workers.size());
  // Created here so its canonical path (what the worker uses) is known before the worker starts.
  work_dirs.push_back(dir + "/work-" + n);
  std::filesystem::create_directories(work_dirs.back());
  work_dirs.back() = std::filesystem::canonical(work_dirs.back()).string();
  std::vector<std::string> argv{bin("kbfleet-worker"), "--broker", broker, "--plugins", dir + "/plugins",
                                "--slots", std::to_string(options_.slots), "--work", work_dirs.back(),
                                "--metrics", "127.0.0.1:0", "--worker-id", "w" + n,
                                "--heartbeat-ms", "200", "--kill-grace-ms", "300"};
  argv.insert(argv.end(), options_.worker_args.begin(), options_.worker_args.end());
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  workers.push_back(std::make_unique<Daemon>(argv, dir + "/worker-" + n + ".log", options_.worker_env));
  worker_metrics.push_back(workers.back()->wait_for_key("metrics", 10s));
  if (worker_metrics.back().empty()) throw std::runtime_error("worker did not start; see " + dir);
}

void Fleet::start_broker(const std::string& bind) {
  std::vector<std::string> argv{bin("kbfleet-broker"), "--bind", bind, "--events", "tcp://127.0.0.1:*", "--metrics",
                                "127.0.0.1:0", "--data", dir + "/data", "--heartbeat-ms", "200"};
  argv.insert(argv.end(), options_.broker_args.begin(), options_.broker_args.end());
  broker_process = std::make_unique<Daemon>(argv, dir + "/broker.log");
  broker = broker_process->wait_for_key("bind", 10s);
  events = broker_process->wait_for_key("events", 10s);
  broker_metrics = broker_process->wait_for_key("metrics", 10s);
  if (broker.empty()) throw std::runtime_error("broker did not start; see " + dir + "/broker.log");
}

void Fleet::stop_broker() { broker_process.reset(); }

Fleet::~Fleet() {
  workers.clear();
  broker_process.reset();
  remove_tree(dir);
}

CommandResult Fleet::cli(const std::vector<std::string>& args, std::chrono::milliseconds deadline,
                         const std::map<std::string, std::string>& env) const {
  std::vector<std::string> argv{bin("kbfleet"), "--broker", broker};
  argv.insert(argv.end(), args.begin(), args.end());
  auto all = options_.cli_env;
  for (const auto& [k, v] : env) all[k] = v;
  return run_command(argv, deadline, all);
}

bool Fleet::wait_for_workers(std::size_t n, std::chrono::milliseconds deadline) const {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    auto r = cli({"workers", "--json"}, 10s);
    if (r.exit_code == 0) {
      auto j = nlohmann::json::parse(r.out, nullptr, false);
      if (j.is_array() && j.size() >= n) return true;
    }
  }
  return false;
}

std::string Fleet::wait_for_terminal(const std::string& task_id, std::chrono::milliseconds deadline) const {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    auto r = cli({"status", task_id, "--json"}, 10s);
    if (r.exit_code != 0) continue;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (!j.is_object()) continue;
    std::string state = j.value("state", "");
    if (state != "queued" && state != "running" && state != "retrying") return state;
  }
  return "";
}

std::string Fleet::wait_until_running(const std::string& task_id, int events, std::chrono::milliseconds deadline) const {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    auto r = cli({"status", task_id, "--json"}, 10s);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_object() && j.value("state", "") == "running" && j.value("events", 0) >= events) {
      return j.value("worker", "");
    }
  }
  return "";
}

void Fleet::kill_worker(const std::string& name) {
  workers.at(static_cast<std::size_t>(std::stoi(name.substr(1))))->signal(SIGKILL);
}

}  // namespace kbfleet::test
