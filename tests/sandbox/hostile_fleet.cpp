#include "tests/sandbox/hostile_fleet.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace kbfleet::test::hostile {
namespace {

namespace fs = std::filesystem;

// Handlers of plugin `hostile`: each runs `kbfleet-attack <name>` (attacks/main.cpp).
constexpr const char* kAttacks[] = {
    "read-file",     "read-shadow",   "proc-root",      "open-by-handle",                  // fs_read
    "write-file",    "symlink-read",                                                       // fs_write
    "connect-loopback", "raw-socket",                                                      // net
    "fork-bomb",     "memory-hog",    "cpu-spin",       "cpu-spin-forked", "fill-disk",    // limits
    "signal-worker", "ptrace-worker", "worker-environ", "own-environ", "inherited-fds",   // process
    "outlive",       "victim",
    "identity",      "setuid-root",   "setgid-root",    "setuid-binary", "mount",         // privilege
    "unshare-user",  "keyctl",
};

// Handlers of `hostile-artifacts`, and the artifacts they leave (or aim the collector at).
constexpr const char* kArtifactAttacks[] = {"control", "symlink-artifact", "hardlink"};
constexpr const char* kArtifacts =
    "artifacts:\n"
    "  - { id: control, path: out/control.txt }\n"
    "  - { id: leak, path: out/leak.txt }\n"
    "  - { id: leakdir, path: out/leakdir/secret.txt }\n"
    "  - { id: hard, path: out/hard.txt }\n";

template <std::size_t N>
std::string manifest(const std::string& id, const char* const (&attacks)[N], const Quotas& q, const char* artifacts) {
  std::ostringstream m;
  m << "id: " << id << "\nversion: 1.0.0\nhandlers:\n";
  for (const char* a : attacks) m << "  " << a << ": { exec: bin/kbfleet-attack, args: [" << a << "] }\n";
  m << "permissions:\n"
    << "  fs: { write: [\"out/**\"] }\n"
    << "  net: none\n"
    << "  quotas: { timeoutMs: " << q.timeout_ms << ", memoryMb: " << q.memory_mb << ", cpuMs: " << q.cpu_ms
    << ", pids: " << q.pids << ", diskMb: " << q.disk_mb << " }\n"
    << artifacts;
  return m.str();
}

// `hostile-net`: connect-to under an allow-list naming only slot 0's host-side address.
std::string net_manifest(const Quotas& q) {
  std::ostringstream m;
  m << "id: hostile-net\nversion: 1.0.0\nhandlers:\n  connect-to: { exec: bin/kbfleet-attack, args: [connect-to] }\n"
    << "permissions:\n  net: { allow: [\"" << task_net_host(0) << "/32\"] }\n"
    << "  quotas: { timeoutMs: " << q.timeout_ms << ", memoryMb: " << q.memory_mb << ", cpuMs: " << q.cpu_ms
    << ", pids: " << q.pids << ", diskMb: " << q.disk_mb << " }\n";
  return m.str();
}

void write_plugin(const fs::path& root, const std::string& manifest) {
  fs::create_directories(root / "bin");
  std::ofstream(root / "kbfleet.yaml") << manifest;
  fs::copy_file(KBFLEET_ATTACK, root / "bin/kbfleet-attack");
  fs::permissions(root / "bin/kbfleet-attack", fs::perms(0755));
}

// Writes both plugins, makes the fleet dir traversable and host/ world-writable (see header).
void add_hostile_plugins(const std::string& plugins_dir, const Quotas& quotas) {
  fs::path root = fs::path(plugins_dir) / "hostile";
  write_plugin(root, manifest("hostile", kAttacks, quotas, ""));
  write_plugin(fs::path(plugins_dir) / "hostile-artifacts",
               manifest("hostile-artifacts", kArtifactAttacks, quotas, kArtifacts));
  write_plugin(fs::path(plugins_dir) / "hostile-net", net_manifest(quotas));
  // A setuid-root copy for the setuid-binary attack; only a root test run can make one.
  if (geteuid() == 0) {
    fs::copy_file(KBFLEET_ATTACK, root / "bin/suid-probe");
    if (chown((root / "bin/suid-probe").c_str(), 0, 0) != 0 || chmod((root / "bin/suid-probe").c_str(), 04755) != 0) {
      throw std::runtime_error("cannot make bin/suid-probe setuid root");
    }
  }
  fs::path dir = fs::path(plugins_dir).parent_path();
  fs::permissions(dir, fs::perms(0755));
  fs::create_directories(dir / "host");
  fs::permissions(dir / "host", fs::perms(01777));
}

FleetOptions options(const Quotas& quotas, std::map<std::string, std::string> worker_env,
                     std::vector<std::string> worker_args, std::vector<std::string> broker_args) {
  FleetOptions o{1, 2, std::move(worker_args)};
  o.broker_args = std::move(broker_args);
  o.add_plugins = [quotas](const std::string& plugins_dir) { add_hostile_plugins(plugins_dir, quotas); };
  o.worker_env = std::move(worker_env);
  return o;
}

}  // namespace

std::string Finished::error_code() const {
  const auto* outcome = status.contains("outcome") ? &status["outcome"] : nullptr;
  if (outcome == nullptr || !outcome->contains("error")) return "";
  return (*outcome)["error"].value("code", "");
}

bool Finished::has_artifact(const std::string& name) const {
  for (const auto& a : status.value("artifacts", nlohmann::json::array())) {
    if (a.value("name", "") == name) return true;
  }
  return false;
}

std::string Finished::describe() const {
  return "task " + id + " state=" + state + "\noutput:\n" + output + "\nstatus: " + status.dump();
}

namespace {
// "10.<224..239>.<0..255>": the low 12 bits of the pid, so test processes started close together
// (ctest -j) never share a range.
std::string task_net_prefix() {
  const auto pid = static_cast<unsigned>(::getpid());
  return "10." + std::to_string(224 + ((pid >> 8) & 15)) + "." + std::to_string(pid & 255) + ".";
}
}  // namespace

std::string task_net() { return task_net_prefix() + "0/24"; }

std::string task_net_host(int slot) { return task_net_prefix() + std::to_string(4 * slot + 1); }

HostileFleet::HostileFleet(Quotas quotas, std::map<std::string, std::string> worker_env,
                           std::vector<std::string> worker_args, std::vector<std::string> broker_args)
    : fleet(options(quotas, std::move(worker_env), std::move(worker_args), std::move(broker_args))) {
  if (!fleet.wait_for_workers(1)) throw std::runtime_error("the worker did not register; see " + fleet.dir);
}

std::string HostileFleet::submit(const std::string& attack, const std::map<std::string, std::string>& input,
                                 Plugin plugin) const {
  nlohmann::json in = nlohmann::json::object();
  for (const auto& [k, v] : input) in[k] = v;
  const char* id = plugin == Plugin::kHostile ? "hostile" : plugin == Plugin::kNet ? "hostile-net" : "hostile-artifacts";
  auto r = fleet.cli({"submit", id, attack, "--input", in.dump()});
  if (r.exit_code != 0) throw std::runtime_error("kbfleet submit " + attack + " failed: " + r.err);
  return trim(r.out);
}

Finished HostileFleet::run(const std::string& attack, const std::map<std::string, std::string>& input,
                           Plugin plugin) const {
  Finished f;
  f.id = submit(attack, input, plugin);
  f.state = fleet.wait_for_terminal(f.id, 60s);
  auto st = fleet.cli({"status", f.id, "--json"});
  f.status = nlohmann::json::parse(st.out, nullptr, false);
  auto tail = fleet.cli({"tail", f.id}, 30s);
  f.output = tail.out + tail.err;
  return f;
}

void HostileFleet::cancel(const std::string& task_id) const {
  fleet.cli({"cancel", task_id});
  fleet.wait_for_terminal(task_id, 20s);
}

std::string HostileFleet::write_host_secret(const std::string& token) const {
  std::string path = host_dir() + "/secret.txt";
  std::ofstream(path) << token << "\n";
  fs::permissions(path, fs::perms(0644));
  return path;
}

std::string contained_reason(const std::string& output) {
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("CONTAINED: ", 0) == 0) return line.substr(11);
  }
  return "";
}

bool reason_is_one_of(const std::string& reason, std::initializer_list<const char*> expected) {
  for (const char* e : expected) {
    if (reason.find(e) != std::string::npos) return true;
  }
  return false;
}

std::string join(std::initializer_list<const char*> expected) {
  std::string out;
  for (const char* e : expected) out += (out.empty() ? "" : " | ") + std::string(e);
  return out;
}

std::string unique_token() {
  std::random_device rd;
  std::ostringstream s;
  s << "kbfleet-secret-" << std::hex << rd() << rd() << rd();
  return s.str();
}

bool host_has_cgroup_controller(const std::string& name) {
  std::ifstream v2("/sys/fs/cgroup/cgroup.controllers");
  for (std::string c; v2 >> c;) {
    if (c == name) return true;
  }
  std::ifstream v1("/proc/cgroups");  // subsys_name hierarchy num_cgroups enabled
  for (std::string line; std::getline(v1, line);) {
    std::istringstream fields(line);
    std::string subsys;
    int hierarchy = 0, count = 0, enabled = 0;
    if (!(fields >> subsys >> hierarchy >> count >> enabled)) continue;
    if (subsys == name && hierarchy != 0 && enabled == 1) return true;
  }
  return false;
}

// cgroup v2 keeps cpu.stat usage_usec in every cgroup, with or without the cpu controller.
bool host_has_cgroup_v2_cpu_stat() {
  std::ifstream v2("/sys/fs/cgroup/cgroup.controllers");
  std::string c;
  return static_cast<bool>(v2 >> c) && host_has_cgroup_controller("memory");
}

}  // namespace kbfleet::test::hostile
