// kbfleet-spawn-bench: spawn latency of the sandbox launcher, one layer added per row, against a
// bare fork+execve+wait of the same static binary measured in the same run (issue #4). Each row
// reports p50 and p99 over N spawns (start to reaped) and its ratio to the bare row's p50; the
// last rows repeat bare and full sandbox from a process with 1 GiB resident.
//
// Usage (root, for the namespace rows): kbfleet-spawn-bench [--runs N] [--json FILE]
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "worker/executor/launch.hpp"
#include "worker/sandbox/isolation.hpp"
#include "worker/sandbox/probe.hpp"
#include "worker/sandbox/uid_range_lock.hpp"

namespace {

using namespace kbfleet::worker;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Row {
  std::string name;
  double p50_us, p99_us;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

// One row: `prepare` (untimed, may be empty) then `spawn` (timed).
struct Case {
  std::string name;
  std::function<void()> prepare;
  std::function<bool()> spawn;
};

// Runs every case once per round, `runs` rounds (plus a tenth as warm-up), so that a machine
// getting slower or faster during the run shifts every row alike instead of biasing the later ones.
std::vector<Row> measure(int runs, const std::vector<Case>& cases) {
  std::vector<std::vector<double>> us(cases.size());
  for (int i = 0; i < runs + runs / 10; ++i) {
    for (std::size_t c = 0; c < cases.size(); ++c) {
      if (cases[c].prepare) cases[c].prepare();
      auto t0 = Clock::now();
      if (!cases[c].spawn()) {
        std::fprintf(stderr, "%s: spawn failed\n", cases[c].name.c_str());
        std::exit(1);
      }
      if (i >= runs / 10) us[c].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
  }
  std::vector<Row> rows;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    rows.push_back({cases[c].name, percentile(us[c], 0.5), percentile(us[c], 0.99)});
  }
  return rows;
}

bool bare(const std::string& exe) {
  pid_t pid = ::fork();
  if (pid == 0) {
    char* argv[] = {const_cast<char*>(exe.c_str()), nullptr};
    char* envp[] = {nullptr};
    ::execve(exe.c_str(), argv, envp);
    ::_exit(127);
  }
  int status = 0;
  return pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool launched(const LaunchSpec& spec) {
  auto l = launch(spec);
  if (!l) {
    std::fprintf(stderr, "%s\n", l.error().to_string().c_str());
    return false;
  }
  int status = 0;
  return ::waitpid(l->pid, &status, 0) == l->pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Which layers a row adds, cumulatively.
struct Layers {
  bool netns = false, namespaces = false, userns = false, rest = false;
};

// The isolation a row asks for: `have` with the layers the row does not add switched off.
std::shared_ptr<const Isolation> isolation(const SandboxLayers& have, const Layers& want, const fs::path& staging,
                                           const fs::path& plugin_dir, const fs::path& workspace) {
  if (!want.namespaces && !want.rest) return nullptr;
  SandboxLayers some = have;
  if (!want.namespaces) some.namespaces = false;
  if (!want.userns) some.identities = nullptr;
  if (!want.rest) {
    some.drop_capabilities = false;
    some.landlock_abi = 0;
    some.seccomp = nullptr;
  }
  auto iso = make_isolation(some, {staging, plugin_dir, workspace, {}, {"**"}, 0, 16});
  if (!iso) {
    std::fprintf(stderr, "%s\n", iso.error().to_string().c_str());
    std::exit(1);
  }
  return *iso;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 300;
  std::string json_out;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_out = argv[++i];
  }
  fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
  ProbeOptions probe;
  probe.init = self / "kbfleet-init";
  // Task uids of its own, as a worker without --task-uid-base takes them: never a live worker's.
  std::optional<kbfleet::worker::UidRangeLock> uid_lock;
  if (::geteuid() == 0) {
    auto lock = kbfleet::worker::UidRangeLock::take_first_free(probe.slots);
    if (!lock) {
      std::fprintf(stderr, "kbfleet-spawn-bench: %s\n", lock.error().message.c_str());
      return 78;
    }
    probe.uid_base = lock->base();
    uid_lock = std::move(*lock);
  }
  SandboxLayers have = probe_sandbox(probe);
  if (!have.namespaces || !have.identities || !have.seccomp || have.landlock_abi == 0) {
    std::fprintf(stderr, "kbfleet-spawn-bench needs every layer (run as root on Linux >= 6.7)\n");
    return 69;
  }

  // The binary lives in a "plugin" directory and runs with a workspace, as a real task would.
  fs::path dir = fs::temp_directory_path() / ("kbfleet-spawn-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir / "plugin");
  fs::create_directories(dir / "work" / "ws");
  fs::create_directories(dir / "root");
  fs::copy_file(self / "kbfleet-bench-true", dir / "plugin" / "true");
  const std::string exe = (dir / "plugin" / "true").string();
  const fs::path ws = dir / "work" / "ws";

  auto spec_for = [&](const Layers& want) {
    LaunchSpec spec;
    spec.exec = exe;
    spec.workspace = ws;
    spec.net = want.netns ? NetMode::kNone : NetMode::kHost;
    spec.limits = {};
    spec.isolation = isolation(have, want, dir / "root", dir / "plugin", ws);
    return spec;
  };
  struct Layered {
    const char* name;
    Layers layers;
  };
  const std::vector<Layered> cases{
      {"launcher, no layers (clone+exec)", {}},
      {"+ mnt/pid/ipc/uts ns, new root, init", {false, true, false, false}},
      {"+ userns (slot uid)", {false, true, true, false}},
      {"+ caps, no_new_privs, landlock, seccomp", {false, true, true, true}},
      {"+ netns (all layers)", {true, true, true, true}},
  };

  std::vector<LaunchSpec> specs;
  for (const auto& c : cases) specs.push_back(spec_for(c.layers));
  // A fresh Isolation before each spawn, untimed, as the worker makes one per task
  // (worker/task/prepare.cpp): the child adds the rules of its fresh mounts to the Landlock
  // ruleset, so one ruleset reused for every spawn would grow by three rules each time.
  auto renew = [&](std::size_t i) { return [&, i] { specs[i].isolation = isolation(have, cases[i].layers, dir / "root", dir / "plugin", ws); }; };
  std::vector<Case> small{{"bare fork+exec", {}, [&] { return bare(exe); }}};
  for (std::size_t i = 0; i < cases.size(); ++i) {
    small.push_back({cases[i].name, renew(i), [&, i] { return launched(specs[i]); }});
  }
  std::vector<Row> rows = measure(runs, small);
  // Same from a big process: fork copies its page tables, clone(CLONE_VM) does not.
  const std::size_t big = std::size_t{1} << 30;
  auto* mem = static_cast<char*>(::mmap(nullptr, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  std::memset(mem, 1, big);
  std::vector<Case> large{{"1 GiB resident: bare fork+exec", {}, [&] { return bare(exe); }},
                          {"1 GiB resident: all layers but netns", renew(3), [&] { return launched(specs[3]); }},
                          {"1 GiB resident: all layers", renew(4), [&] { return launched(specs[4]); }}};
  for (auto& r : measure(runs, large)) rows.push_back(r);
  ::munmap(mem, big);
  fs::remove_all(dir);

  const double base = rows[0].p50_us;
  std::printf("| spawn (N=%d) | p50 µs | p99 µs | p50 / bare |\n|---|---:|---:|---:|\n", runs);
  for (const auto& r : rows) std::printf("| %s | %.0f | %.0f | %.2f |\n", r.name.c_str(), r.p50_us, r.p99_us, r.p50_us / base);
  const double small_all = rows[5].p50_us, small_no_net = rows[4].p50_us;
  std::printf("\nfrom 1 GiB vs small process (all layers but netns): %.2f (target <= 1.2)\n", rows[7].p50_us / small_no_net);
  std::printf("from 1 GiB vs small process (all layers): %.2f (target <= 1.2)\n", rows[8].p50_us / small_all);
  std::printf("all layers but netns / bare: %.2f (target <= 1.5); all layers / bare: %.2f (target <= 2.0)\n",
              small_no_net / base, small_all / base);
  if (!json_out.empty()) {
    std::ofstream j(json_out);
    j << "{\"runs\":" << runs << ",\"rows\":[";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      j << (i ? "," : "") << "{\"name\":\"" << rows[i].name << "\",\"p50_us\":" << rows[i].p50_us
        << ",\"p99_us\":" << rows[i].p99_us << "}";
    }
    j << "]}\n";
  }
  return 0;
}
