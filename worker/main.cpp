// kbfleet-worker: parses flags, probes the sandbox layers, loads the plugins and runs the worker
// until SIGTERM/SIGINT. Exit codes: 64 bad flags, 78 bad configuration (plugins dir, endpoint),
// 69 a layer required by --require-layer is missing.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/log/log.hpp"
#include "common/posix/signals.hpp"
#include "worker/sandbox/probe.hpp"
#include "worker/sandbox/uid_range_lock.hpp"
#include "worker/worker.hpp"
#include "common/posix/heap.hpp"

extern char** environ;

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out.empty() ? "none" : out;
}

}  // namespace

int main(int argc, char** argv) {
  kbfleet::posix::keep_freed_heap();  // artifact chunks reuse their memory (common/posix/heap.hpp)
  kbfleet::worker::WorkerOptions opt;
  std::string log_level = "info";
  bool allow_degraded = false, allow_unsandboxed = false, check_sandbox = false, builtin_noop = false;
  std::vector<std::string> required_layers;
  kbfleet::worker::ProbeOptions probe;
  CLI::App app{"kbfleet-worker: runs kbfleet plugin handlers for a broker"};
  app.add_option("--broker", opt.broker, "broker endpoint")->capture_default_str();
  app.add_option("--plugins", opt.plugins_dir, "directory of plugins (<id>/kbfleet.yaml or <id>/<version>/kbfleet.yaml)");
  app.add_option("--work", opt.work_dir, "directory for per-task workspaces")->capture_default_str();
  app.add_option("--slots", opt.slots, "tasks run at once")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--metrics", opt.metrics, "HOST:PORT for Prometheus /metrics (port 0 = any; empty = off)");
  app.add_option("--worker-id", opt.worker_id, "name shown in `kbfleet workers` (default HOST-PID)");
  app.add_option("--grant", opt.policy.granted, "grant a capability to plugins run here (repeatable)");
  app.add_flag("--allow-degraded", allow_degraded, "run plugins even when a sandbox layer they need is unavailable");
  app.add_flag("--allow-unsandboxed", allow_unsandboxed, "run plugins whose manifest says `sandbox: none` (trusted only)");
  app.add_flag("--builtin-noop", builtin_noop,
               "also offer the built-in plugin kbfleet.noop (handler noop: completes in the worker at once, no "
               "sandbox, echoes its input; for benchmarks)");
  app.add_option("--require-layer", required_layers, "exit if this sandbox layer is unavailable (repeatable)");
  app.add_flag("--check-sandbox", check_sandbox, "print the sandbox layers of this host and exit");
  app.add_option("--task-net", probe.task_net,
                 "IPv4 CIDR for per-slot task networks (a /30 per slot): enables plugins with a net allow-list, "
                 "enforced with nftables (e.g. 10.231.0.0/16; docs/sandbox.md)");
  double task_cpus = 0;
  app.add_option("--task-cpus", task_cpus,
                 "CPUs each task may use at most, e.g. 1.5 (the task cgroup's cpu.max / cpu.cfs_quota_us); default: no limit")
      ->check(CLI::Range(0.01, 4096.0));
  auto* uid_base_flag =
      app.add_option("--task-uid-base", probe.uid_base,
                     "host uid/gid of slot 0's task user; slot N runs as base+N (default: the first block of 4096 "
                     "from 200000 that no other worker on this host holds)")
          ->check(CLI::Range(std::uint32_t{1000}, std::uint32_t{4000000000U}));
  app.add_option("--init", probe.init, "path of kbfleet-init (default: next to kbfleet-worker)");
  app.add_option("--heartbeat-ms", opt.heartbeat_ms, "heartbeat interval")->check(CLI::Range(10, 60000))->capture_default_str();
  app.add_option("--liveness", opt.liveness, "silent heartbeats before the broker is presumed gone")->check(CLI::Range(2, 100))->capture_default_str();
  app.add_option("--drain-ms", opt.drain_ms, "on SIGTERM, how long running tasks may finish before they are killed")->check(CLI::Range(std::int64_t{0}, std::int64_t{3600000}))->capture_default_str();
  app.add_option("--kill-grace-ms", opt.policy.kill_grace_ms, "SIGTERM to SIGKILL grace on timeout or cancel")->check(CLI::Range(0, 600000))->capture_default_str();
  const char* env_key = std::getenv("KBFLEET_KEY");
  const char* env_broker_key = std::getenv("KBFLEET_BROKER_KEY");
  std::string key_file = env_key ? env_key : "";
  std::string broker_key_file = env_broker_key ? env_broker_key : "";
  app.add_option("--key", key_file, "this worker's secret certificate for CURVE (default $KBFLEET_KEY)");
  app.add_option("--broker-key", broker_key_file, "the broker's public certificate (default $KBFLEET_BROKER_KEY)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 64;
  }
  kbfleet::log::init("worker", log_level);

  for (const auto& cap : opt.policy.granted) {
    if (cap.rfind(kbfleet::protocol::kReservedCapabilityPrefix, 0) == 0) {
      std::cerr << "kbfleet-worker: --grant " << cap << ": capabilities starting \""
                << kbfleet::protocol::kReservedCapabilityPrefix << "\" are kbfleet's own ("
                << kbfleet::protocol::kNetAllowCapability << " comes with --task-net)\n";
      return 64;
    }
  }
  probe.slots = static_cast<int>(opt.slots);
  // The task uids are this worker's alone on this host (uid_range_lock.hpp), held until it exits.
  std::optional<kbfleet::worker::UidRangeLock> uid_lock;
  if (::geteuid() == 0) {
    using kbfleet::worker::UidRangeLock;
    auto lock = uid_base_flag->count() > 0 ? UidRangeLock::take(probe.uid_base, probe.slots)
                                           : UidRangeLock::take_first_free(probe.slots);
    if (!lock) {
      std::cerr << "kbfleet-worker: " << lock.error().message << "\n";
      return 78;  // EX_CONFIG
    }
    probe.uid_base = lock->base();
    uid_lock = std::move(*lock);
  }
  probe.cpu_bandwidth = task_cpus > 0;
  opt.policy.task_cpu_quota_us = static_cast<std::int64_t>(task_cpus * kbfleet::worker::kCpuPeriodUs);
  opt.policy.layers = kbfleet::worker::probe_sandbox(probe);
  const auto active = opt.policy.layers.active();
  const auto missing = opt.policy.layers.missing();
  std::vector<std::string> missing_required;
  for (const auto& l : required_layers) {
    if (std::find(active.begin(), active.end(), l) == active.end()) missing_required.push_back(l);
  }
  const auto& cgroups = opt.policy.layers.cgroups;
  if (check_sandbox) {
    for (const auto& l : active) std::cout << l << "=active\n";
    for (const auto& l : missing) std::cout << l << "=unavailable\n";
    if (!opt.policy.layers.networks) std::cout << "netallow=unavailable\n";
    if (opt.policy.layers.networks) std::cout << "netallow.cidr=" << opt.policy.layers.networks->cidr() << "\n";
    // Detail lines, still key=value: versions, and why each missing layer is missing.
    if (cgroups) std::cout << "cgroup.version=" << cgroups->version() << "\n";
    if (cgroups) std::cout << "cgroup.cpu_quota=" << (cgroups->cpu_bandwidth() ? "available" : "unavailable") << "\n";
    if (opt.policy.layers.landlock_abi > 0) std::cout << "landlock.abi=" << opt.policy.layers.landlock_abi << "\n";
    if (opt.policy.layers.identities) std::cout << "userns.uid_base=" << probe.uid_base << "\n";
    for (const auto& [layer, why] : opt.policy.layers.reasons) std::cout << layer << ".reason=" << why << "\n";
    return missing_required.empty() ? 0 : 69;
  }
  spdlog::info("sandbox layers active={} unavailable={}", join(active), join(missing));
  if (cgroups) {
    spdlog::info("sandbox cgroup version={} parent={}", cgroups->version(), cgroups->location());
  } else {
    // Not fatal: memory falls back to RLIMIT_AS per process and pids is not enforced (prepare.cpp).
    spdlog::warn("sandbox cgroup unavailable, memoryMb falls back to RLIMIT_AS and pids is not enforced reason=\"{}\"",
                 opt.policy.layers.reasons["cgroup"]);
  }
  for (const auto& [layer, why] : opt.policy.layers.reasons) {
    if (layer == "netallow" && probe.task_net.empty()) {
      spdlog::info("sandbox net allow-lists off: plugins with one are refused (NOT_SUPPORTED); --task-net CIDR enables them");
    } else if (layer != "cgroup") {
      spdlog::warn("sandbox layer unavailable layer={} reason=\"{}\"", layer, why);
    }
  }
  if (task_cpus > 0 && !(cgroups && cgroups->cpu_bandwidth())) {
    std::cerr << "kbfleet-worker: --task-cpus needs the cgroup cpu controller (v2: delegated to the worker's cgroup; "
                 "v1: the cpu hierarchy mounted and writable), which this host does not give the worker\n";
    return 78;
  }
  if (task_cpus > 0) spdlog::info("sandbox CPU quota per task cpus={} cpu_quota_us={}", task_cpus, opt.policy.task_cpu_quota_us);
  if (opt.policy.layers.networks) {
    spdlog::info("sandbox net allow-lists on task_net={} (slot 0: host {} <-> task {})", probe.task_net,
                 opt.policy.layers.networks->addresses(0).host, opt.policy.layers.networks->addresses(0).task);
  } else if (!probe.task_net.empty()) {
    std::cerr << "kbfleet-worker: --task-net " << probe.task_net << ": " << opt.policy.layers.reasons["netallow"] << "\n";
    return 78;  // EX_CONFIG: asked for, and cannot be had
  }
  if (!missing_required.empty()) {
    std::cerr << "kbfleet-worker: required sandbox layers unavailable: " << join(missing_required) << "\n";
    return 69;  // EX_UNAVAILABLE
  }
  if (opt.plugins_dir.empty() || opt.work_dir.empty()) {
    std::cerr << "kbfleet-worker: --plugins DIR and --work DIR are required\n";
    return 64;
  }
  opt.policy.degraded = allow_degraded ? kbfleet::worker::DegradedPolicy::kAllow : kbfleet::worker::DegradedPolicy::kRefuse;
  opt.policy.unsandboxed =
      allow_unsandboxed ? kbfleet::worker::UnsandboxedPolicy::kAllow : kbfleet::worker::UnsandboxedPolicy::kRefuse;
  if (allow_degraded) spdlog::warn("--allow-degraded: plugins may run without sandbox layers they declare");
  if (builtin_noop) {
    opt.builtin_noop = kbfleet::worker::BuiltinNoop::kOn;
    spdlog::info("--builtin-noop: offering plugin kbfleet.noop (runs in the worker, no sandbox)");
  }
  if (allow_unsandboxed) spdlog::warn("--allow-unsandboxed: plugins with `sandbox: none` run without isolation");
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos) opt.policy.host_env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  if (opt.worker_id.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    opt.worker_id = std::string(host) + "-" + std::to_string(::getpid());
  }

  auto keys = kbfleet::transport::load_client_keys(key_file, broker_key_file);
  if (!keys) {
    std::cerr << "kbfleet-worker: " << keys.error().to_string() << "\n";
    return 78;  // EX_CONFIG
  }
  opt.curve = std::move(*keys);

  auto stop = kbfleet::posix::signal_fd({SIGTERM, SIGINT});
  if (!stop) {
    std::cerr << "kbfleet-worker: " << stop.error().to_string() << "\n";
    return 71;  // EX_OSERR
  }

  auto worker = kbfleet::worker::Worker::create(std::move(opt));
  if (!worker) {
    std::cerr << "kbfleet-worker: " << worker.error().to_string() << "\n";
    return 78;
  }
  std::cout << "metrics=" << (*worker)->metrics_address() << std::endl;
  (*worker)->run(stop->get());
  return 0;
}
