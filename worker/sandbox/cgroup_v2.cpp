// The cgroup v2 implementation (Documentation/admin-guide/cgroup-v2.rst): one directory per task
// with memory.max, memory.swap.max = 0, memory.oom.group = 1, pids.max; cgroup.kill to end it.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <spdlog/spdlog.h>

#include "worker/sandbox/cgroup_fs.hpp"

namespace kbfleet::worker::cgroup_fs {
namespace {

constexpr std::int64_t kMiB = 1 << 20;

class TaskCgroupV2 final : public TaskDirs {
 public:
  explicit TaskCgroupV2(const std::string& dir) : TaskDirs({dir}, std::nullopt), dir_(dir) {}

  Status configure(const CgroupLimits& limits);
  bool oom_killed() const override {
    // memory.events counts this cgroup and its descendants; oom_kill = processes the OOM killer
    // killed (with memory.oom.group, every process of the task).
    return read_keyed(dir_ + "/memory.events", "oom_kill").value_or(0) > 0;
  }
  bool pids_limit_hit() const override { return read_keyed(dir_ + "/pids.events", "max").value_or(0) > 0; }
  std::optional<std::int64_t> cpu_usage_ms() const override {
    // cpu.stat exists in every v2 cgroup, whether or not the cpu controller is enabled
    // (cgroup-v2.rst, "CPU Interface Files"), so the budget needs no extra delegation.
    auto usec = read_keyed(dir_ + "/cpu.stat", "usage_usec");
    if (!usec) return std::nullopt;
    return *usec / 1000;
  }

 private:
  std::string dir_;
};

Status TaskCgroupV2::configure(const CgroupLimits& limits) {
  if (auto st = make(); !st) return st;
  // cgroup.kill exists from Linux 5.14; before that kill_all() SIGKILLs pid by pid.
  if (exists(dir_ + "/cgroup.kill")) set_kill_file(dir_ + "/cgroup.kill");
  if (limits.memory_mb > 0) {
    if (auto st = write_file(dir_ + "/memory.max", std::to_string(limits.memory_mb * kMiB)); !st) return st;
    // The quota is memory, not memory plus swap: without this a handler could page out past it.
    // Absent when the kernel does no swap accounting, and then there is nothing to limit.
    if (auto st = write_if_present(dir_ + "/memory.swap.max", "0"); !st) return tl::unexpected(st.error());
    // An OOM kill ends the whole task rather than one process of it, so a handler does not carry
    // on with a helper missing (Linux 4.19).
    if (auto st = write_if_present(dir_ + "/memory.oom.group", "1"); !st) return tl::unexpected(st.error());
  }
  if (limits.pids > 0) {
    if (auto st = write_file(dir_ + "/pids.max", std::to_string(limits.pids)); !st) return st;
  }
  if (limits.cpu_quota_us > 0) {
    const std::string max = std::to_string(limits.cpu_quota_us) + " " + std::to_string(kCpuPeriodUs);
    if (auto st = write_file(dir_ + "/cpu.max", max); !st) return st;
  }
  return {};
}

class CgroupsV2 final : public Cgroups {
 public:
  CgroupsV2(std::string dir, bool cpu) : dir_(std::move(dir)), cpu_(cpu) {}

  std::string_view version() const override { return "v2"; }
  std::string location() const override { return dir_; }
  bool cpu_bandwidth() const override { return cpu_; }
  Result<std::unique_ptr<TaskCgroup>> create(std::string_view name, const CgroupLimits& limits) const override {
    auto base = task_dir_name(name);
    if (!base) return tl::unexpected(base.error());
    if (limits.cpu_quota_us > 0 && !cpu_) {
      return make_error(ErrorCode::kSandboxUnavailable, "a CPU quota needs the cpu controller, not delegated here",
                        {{"layer", "cgroup"}});
    }
    auto cgroup = std::make_unique<TaskCgroupV2>(dir_ + "/" + *base);
    if (auto st = cgroup->configure(limits); !st) return tl::unexpected(st.error());
    return std::unique_ptr<TaskCgroup>(std::move(cgroup));
  }

 private:
  std::string dir_;
  bool cpu_;
};

bool failed_with(const Error& e, int err) {
  auto it = e.details.find("errno");
  return it != e.details.end() && it->second == std::to_string(err);
}

// Makes memory and pids available to the children of `dir`, moving the worker into `dir`/worker
// if it has to (see probe_cgroups() in cgroup.hpp).
Status enable_controllers(const std::string& dir) {
  const std::string control = dir + "/cgroup.subtree_control";
  auto enabled = read_file(control);
  if (!enabled) return tl::unexpected(enabled.error());
  if (lists_controller(*enabled, "memory") && lists_controller(*enabled, "pids")) return {};

  auto st = write_file(control, "+memory +pids");
  if (st) return {};
  // EBUSY: the cgroup has processes (the worker at least) and is not the root, so it may not
  // hand controllers to children ("no internal process constraint"). Become a leaf child.
  if (!failed_with(st.error(), EBUSY)) return tl::unexpected(st.error());
  const std::string leaf = dir + "/worker";
  if (::mkdir(leaf.c_str(), 0755) < 0 && errno != EEXIST) return tl::unexpected(layer_error("mkdir", leaf, errno));
  const std::string self = std::to_string(::getpid());
  if (auto moved = write_file(leaf + "/cgroup.procs", self); !moved) return moved;
  st = write_file(control, "+memory +pids");
  if (st) {
    spdlog::info("worker moved into a leaf cgroup to delegate controllers cgroup={}", leaf);
    return {};
  }
  // Other processes share the worker's cgroup. Go back, so the worker is not left in a leaf for
  // nothing; the rmdir fails harmlessly if another worker lives there too.
  (void)write_file(dir + "/cgroup.procs", self);
  ::rmdir(leaf.c_str());
  return make_error(ErrorCode::kSandboxUnavailable,
                    st.error().message + " even after moving the worker into " + leaf +
                        ": other processes share the worker's cgroup; give it a cgroup of its own "
                        "(systemd: Delegate=yes)",
                    {{"layer", "cgroup"}});
}

// The cpu controller for cpu.max, when asked for: after memory and pids, so a host that cannot
// delegate it still gets those. False (with a warning) if it cannot be enabled.
bool enable_cpu(const std::string& dir, std::string_view available) {
  if (!lists_controller(available, "cpu")) {
    spdlog::warn("cgroup v2 cpu controller not offered to the worker's cgroup dir={}", dir);
    return false;
  }
  auto enabled = read_file(dir + "/cgroup.subtree_control");
  if (enabled && lists_controller(*enabled, "cpu")) return true;
  if (auto st = write_file(dir + "/cgroup.subtree_control", "+cpu"); !st) {
    spdlog::warn("cgroup v2 cpu controller could not be delegated error=\"{}\"", st.error().message);
    return false;
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<Cgroups>> open_v2(const std::string& dir, const CgroupOptions& options) {
  auto available = read_file(dir + "/cgroup.controllers");
  if (!available) return make_error(ErrorCode::kSandboxUnavailable, available.error().message);
  std::string missing;
  for (const char* controller : {"memory", "pids"}) {
    if (!lists_controller(*available, controller)) missing += (missing.empty() ? "" : ", ") + std::string(controller);
  }
  if (!missing.empty()) {
    return make_error(ErrorCode::kSandboxUnavailable,
                      "the worker's cgroup " + dir + " does not offer the " + missing +
                          " controller (cgroup.controllers): the parent does not delegate it "
                          "(systemd: Delegate=yes), or it is bound to a cgroup v1 hierarchy",
                      {{"layer", "cgroup"}});
  }
  if (auto st = enable_controllers(dir); !st) return tl::unexpected(st.error());
  const bool cpu = options.cpu_bandwidth && enable_cpu(dir, *available);
  remove_stale(dir);
  auto cgroups = std::make_unique<CgroupsV2>(dir, cpu);
  // One task cgroup made and removed, so a read-only cgroupfs or a missing knob shows at start.
  auto probe = cgroups->create("probe", CgroupLimits{1, 1});
  if (!probe) return tl::unexpected(probe.error());
  return std::unique_ptr<Cgroups>(std::move(cgroups));
}

}  // namespace kbfleet::worker::cgroup_fs
