// The cgroup v1 implementation (Documentation/admin-guide/cgroup-v1/memory.rst, pids.rst,
// cpuacct.rst): a directory per task in the memory and in the pids hierarchy, and in the cpuacct
// one when the host mounts it, each under the worker's own cgroup of that hierarchy; the task's
// first process joins them all.
#include <charconv>

#include <spdlog/spdlog.h>

#include "worker/sandbox/cgroup_fs.hpp"

namespace kbfleet::worker::cgroup_fs {
namespace {

constexpr std::int64_t kMiB = 1 << 20;

std::optional<std::int64_t> read_number(const std::string& path) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
  if (ec != std::errc{}) return std::nullopt;
  return n;
}

std::vector<std::string> task_dirs(const std::string& memory, const std::string& pids,
                                   const std::optional<std::string>& cpuacct, const std::optional<std::string>& cpu) {
  std::vector<std::string> dirs{memory, pids};
  if (cpuacct) dirs.push_back(*cpuacct);
  if (cpu && cpu != cpuacct) dirs.push_back(*cpu);
  return dirs;
}

class TaskCgroupV1 final : public TaskDirs {
 public:
  // `cpu_dir`: the task's directory in the cpu hierarchy, only when it gets a CPU quota (it may be
  // `cpuacct_dir` itself where the two controllers are mounted together).
  TaskCgroupV1(const std::string& memory_dir, const std::string& pids_dir, std::optional<std::string> cpuacct_dir,
               std::optional<std::string> cpu_dir)
      : TaskDirs(task_dirs(memory_dir, pids_dir, cpuacct_dir, cpu_dir), std::nullopt),
        memory_(memory_dir),
        pids_(pids_dir),
        cpuacct_(std::move(cpuacct_dir)),
        cpu_(std::move(cpu_dir)) {}

  Status configure(const CgroupLimits& limits);
  bool oom_killed() const override {
    // The oom_kill line of memory.oom_control exists from Linux 4.13. Before that, failcnt (times
    // the usage hit the limit) is the best evidence there is: it can also count a reclaim that
    // succeeded, so callers combine it with "the handler failed".
    if (auto kills = read_keyed(memory_ + "/memory.oom_control", "oom_kill")) return *kills > 0;
    return read_number(memory_ + "/memory.failcnt").value_or(0) > 0;
  }
  bool pids_limit_hit() const override { return read_keyed(pids_ + "/pids.events", "max").value_or(0) > 0; }
  std::optional<std::int64_t> cpu_usage_ms() const override {
    if (!cpuacct_) return std::nullopt;
    auto ns = read_number(*cpuacct_ + "/cpuacct.usage");  // nanoseconds, user + system
    if (!ns) return std::nullopt;
    return *ns / 1'000'000;
  }

 private:
  std::string memory_, pids_;
  std::optional<std::string> cpuacct_, cpu_;
};

Status TaskCgroupV1::configure(const CgroupLimits& limits) {
  if (auto st = make(); !st) return st;
  // A new memory cgroup inherits oom_kill_disable from its parent; with the killer disabled a task
  // at its limit would hang instead of ending MEMORY_LIMIT.
  if (auto st = write_if_present(memory_ + "/memory.oom_control", "0"); !st) return tl::unexpected(st.error());
  if (limits.memory_mb > 0) {
    const std::string bytes = std::to_string(limits.memory_mb * kMiB);
    if (auto st = write_file(memory_ + "/memory.limit_in_bytes", bytes); !st) return st;
    // memory + swap at the same value: no swap beyond the quota. Present only with swap accounting
    // (CONFIG_MEMCG_SWAP, swapaccount=1); written second because the kernel requires
    // memsw >= limit at every step.
    if (auto st = write_if_present(memory_ + "/memory.memsw.limit_in_bytes", bytes); !st) {
      return tl::unexpected(st.error());
    }
  }
  if (limits.pids > 0) {
    if (auto st = write_file(pids_ + "/pids.max", std::to_string(limits.pids)); !st) return st;
  }
  if (limits.cpu_quota_us > 0 && cpu_) {
    if (auto st = write_file(*cpu_ + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs)); !st) return st;
    if (auto st = write_file(*cpu_ + "/cpu.cfs_quota_us", std::to_string(limits.cpu_quota_us)); !st) return st;
  }
  return {};
}

class CgroupsV1 final : public Cgroups {
 public:
  CgroupsV1(std::string memory_dir, std::string pids_dir, std::optional<std::string> cpuacct_dir,
            std::optional<std::string> cpu_dir)
      : memory_(std::move(memory_dir)),
        pids_(std::move(pids_dir)),
        cpuacct_(std::move(cpuacct_dir)),
        cpu_(std::move(cpu_dir)) {}

  std::string_view version() const override { return "v1"; }
  bool cpu_bandwidth() const override { return cpu_.has_value(); }
  std::string location() const override { return memory_ + "," + pids_ + (cpuacct_ ? "," + *cpuacct_ : ""); }
  Result<std::unique_ptr<TaskCgroup>> create(std::string_view name, const CgroupLimits& limits) const override {
    auto base = task_dir_name(name);
    if (!base) return tl::unexpected(base.error());
    std::optional<std::string> cpuacct, cpu;
    if (cpuacct_) cpuacct = *cpuacct_ + "/" + *base;
    if (limits.cpu_quota_us > 0) {
      if (!cpu_) {
        return make_error(ErrorCode::kSandboxUnavailable, "a CPU quota needs the cpu controller, not mounted here",
                          {{"layer", "cgroup"}});
      }
      cpu = *cpu_ + "/" + *base;
    }
    auto cgroup = std::make_unique<TaskCgroupV1>(memory_ + "/" + *base, pids_ + "/" + *base, std::move(cpuacct), std::move(cpu));
    if (auto st = cgroup->configure(limits); !st) return tl::unexpected(st.error());
    return std::unique_ptr<TaskCgroup>(std::move(cgroup));
  }

 private:
  std::string memory_, pids_;
  std::optional<std::string> cpuacct_;  // absent: cpuMs stays a per-process RLIMIT_CPU only
  std::optional<std::string> cpu_;      // absent: no CPU quota (--task-cpus)
};

}  // namespace

Result<std::unique_ptr<Cgroups>> open_v1(const CgroupDirs& dirs) {
  std::string missing;
  for (const char* controller : {"memory", "pids"}) {
    if (!dirs.v1.count(controller)) missing += (missing.empty() ? "" : ", ") + std::string(controller);
  }
  if (!missing.empty()) {
    return make_error(ErrorCode::kSandboxUnavailable,
                      "no cgroup v1 hierarchy with the " + missing + " controller holds this process",
                      {{"layer", "cgroup"}});
  }
  remove_stale(dirs.v1.at("memory"));
  remove_stale(dirs.v1.at("pids"));
  std::optional<std::string> cpuacct;
  if (auto it = dirs.v1.find("cpuacct"); it != dirs.v1.end()) {
    // Often co-mounted with cpu as one hierarchy; then it is a third directory all the same,
    // unless it is the memory or pids one (a host mounting every controller together).
    if (it->second != dirs.v1.at("memory") && it->second != dirs.v1.at("pids")) {
      cpuacct = it->second;
      remove_stale(*cpuacct);
    }
  }
  std::optional<std::string> cpu;
  if (auto it = dirs.v1.find("cpu"); it != dirs.v1.end()) {
    if (it->second != dirs.v1.at("memory") && it->second != dirs.v1.at("pids")) {
      cpu = it->second;
      if (cpu != cpuacct) remove_stale(*cpu);
    }
  }
  const std::string memory = dirs.v1.at("memory"), pids = dirs.v1.at("pids");
  auto cgroups = std::make_unique<CgroupsV1>(memory, pids, cpuacct, cpu);
  // One task cgroup made and removed, so a read-only cgroupfs or a missing knob shows at start.
  auto probe = cgroups->create("probe", CgroupLimits{1, 1});
  if (!probe && cpuacct) {
    // cpuacct only makes the CPU budget whole-task; without it memory and pids still hold.
    spdlog::warn("cgroup v1 cpuacct unusable, quotas.cpuMs stays per process dir={} error=\"{}\"", *cpuacct,
                 probe.error().message);
    cpuacct.reset();
    cgroups = std::make_unique<CgroupsV1>(memory, pids, cpuacct, cpu);
    probe = cgroups->create("probe", CgroupLimits{1, 1});
  }
  if (!probe) return tl::unexpected(probe.error());
  probe->reset();
  if (cpu) {
    auto with_cpu = cgroups->create("probe-cpu", CgroupLimits{1, 1, kCpuPeriodUs});
    if (!with_cpu) {
      spdlog::info("cgroup v1 cpu hierarchy unusable, no CPU quota (--task-cpus) dir={} error=\"{}\"", *cpu,
                   with_cpu.error().message);
      cgroups = std::make_unique<CgroupsV1>(memory, pids, cpuacct, std::nullopt);
    }
  }
  return std::unique_ptr<Cgroups>(std::move(cgroups));
}

}  // namespace kbfleet::worker::cgroup_fs
