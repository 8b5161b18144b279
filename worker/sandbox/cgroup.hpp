#pragma once
// The cgroup layer: kernel-enforced memory and pids quotas per task, and a kill that reaches every
// process of the task, including ones that left the process group with setsid (issue #4).
//
// Guarantees, when the layer is active (each with a test in tests/worker/sandbox/cgroup_test.cpp):
//  - a task's processes live in their own cgroup under the worker's, joined before exec;
//  - memory beyond quotas.memoryMb (no swap) triggers the kernel OOM killer inside that cgroup
//    only, and the task ends MEMORY_LIMIT;
//  - at most quotas.pids processes exist at once; a handler that failed after fork hit the limit
//    ends PIDS_LIMIT;
//  - kill_all() SIGKILLs every process in the cgroup, whatever its process group or session;
//  - cpu_usage_ms() is the CPU time of every process the task ever had (v2 cpu.stat usage_usec,
//    v1 cpuacct.usage), so quotas.cpuMs is one budget for the whole task, not one per process;
//  - with CgroupLimits::cpu_quota_us (the operator's --task-cpus), the task's processes together
//    get at most that much CPU time per 100 ms (v2 cpu.max, v1 cpu.cfs_quota_us): the kernel
//    throttles them, so one task cannot take every core of a shared worker;
//  - the cgroup is removed when its owner goes (destructor), after its processes are gone; the
//    worker's task cgroups come from cgroup_pool.hpp, which does that on a thread of its own.
//
// Two implementations behind one interface, chosen by probe_cgroups() (nsjail picks cgroup.cc or
// cgroup2.cc the same way): v2 (cgroup_v2.cpp: memory.max, memory.swap.max, memory.oom.group,
// pids.max, cgroup.kill) and v1 (cgroup_v1.cpp: memory.limit_in_bytes, memory.memsw.*, pids.max,
// one directory per controller). Task cgroups are created under the worker's own cgroup (from
// /proc/self/cgroup), never at an absolute place, so a delegated subtree (systemd `Delegate=yes`)
// or a container's cgroup is enough.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

// Quotas the task cgroup enforces; 0 = no limit.
struct CgroupLimits {
  std::int64_t memory_mb = 0;
  std::int64_t pids = 0;
  std::int64_t cpu_quota_us = 0;  // CPU time per kCpuPeriodUs for the whole task; needs cpu_bandwidth()
};

inline constexpr std::int64_t kCpuPeriodUs = 100000;

struct CgroupOptions {
  // v2: also delegate the cpu controller to task cgroups (cpu.max). v1 needs nothing extra: the
  // cpu hierarchy is used when it is mounted and writable.
  bool cpu_bandwidth = false;
};

// One task's cgroup (a directory per v1 controller, one directory for v2). Not thread-safe; used
// from the worker's loop. No method throws.
class TaskCgroup {
 public:
  // SIGKILLs what is left (kill_all) and removes the cgroup; a cgroup that cannot be removed (a
  // process stuck in uninterruptible sleep past the bound) is logged at error with its path.
  virtual ~TaskCgroup() = default;

  // The cgroup.procs files the task's first process writes its pid to before exec: one for v2,
  // one per controller for v1. Valid for the object's lifetime.
  virtual const std::vector<std::string>& procs_files() const = 0;
  // True if the kernel OOM killer killed a process in this cgroup (v2 memory.events oom_kill; v1
  // memory.oom_control oom_kill, or memory.failcnt on kernels before 4.13 that lack that line).
  virtual bool oom_killed() const = 0;
  // True if a fork or clone in this cgroup failed because pids.max was reached (pids.events max).
  virtual bool pids_limit_hit() const = 0;
  // User + system CPU time of every process that ran in the cgroup, in ms (v2 cpu.stat
  // usage_usec; v1 cpuacct.usage); nullopt when the host cannot tell (v1 without cpuacct).
  // One small file read: cheap enough for the worker's loop to poll.
  virtual std::optional<std::int64_t> cpu_usage_ms() const = 0;
  // SIGKILLs every process in the cgroup (v2 cgroup.kill when the kernel has it, else each pid of
  // cgroup.procs) and waits until cgroup.procs is empty. Bounded: returns false if processes
  // remain after about 2 s. Blocks the caller for as long as the processes take to exit (a few
  // ms for a normal process).
  virtual bool kill_all() = 0;
};

// The cgroup version in use on this host: creates task cgroups. Immutable after probe_cgroups().
class Cgroups {
 public:
  virtual ~Cgroups() = default;
  virtual std::string_view version() const = 0;  // "v1" or "v2"
  // Where task cgroups go, for the start-up log line (directories, comma-separated).
  virtual std::string location() const = 0;
  // True if create() can honour CgroupLimits::cpu_quota_us.
  virtual bool cpu_bandwidth() const = 0;
  // Creates the cgroup "kbfleet-<pid namespace>-<worker pid>-<name>" under the worker's cgroup
  // and sets `limits`.
  // `name` is one path component of [A-Za-z0-9._-] (INVALID_ARGUMENT otherwise). Errors:
  // SANDBOX_UNAVAILABLE naming the failed call and path (details: layer=cgroup, errno), e.g. the
  // directory exists already or the subtree is not writable. Nothing is left behind on error.
  [[nodiscard]] virtual Result<std::unique_ptr<TaskCgroup>> create(std::string_view name,
                                                                   const CgroupLimits& limits) const = 0;
};

// Probes the host once, at worker start: v2 if the worker's cgroup2 directory offers the memory
// and pids controllers, else v1 if both controllers are mounted and writable, else
// SANDBOX_UNAVAILABLE whose message says why for each version.
// Side effect, v2 only: a process cannot live in a cgroup that delegates controllers to its
// children (cgroup-v2.rst, "no internal process constraint"), so when enabling memory and pids in
// the worker's cgroup.subtree_control fails with EBUSY, the worker moves itself into the leaf
// child `worker/` and enables them then (as nsjail's moveSelfIntoChildCgroup does). Task cgroups
// become siblings of `worker/`. If enabling still fails (other processes share the cgroup), the
// worker moves back and v2 is reported unavailable. Call it before starting threads.
[[nodiscard]] Result<std::unique_ptr<Cgroups>> probe_cgroups(const CgroupOptions& options = {});

// --- pure helpers, exposed for tests -----------------------------------------------------------

// Where this process's cgroups are, from the text of /proc/self/cgroup and /proc/self/mountinfo.
struct CgroupDirs {
  std::optional<std::string> v2;              // the cgroup2 directory, if cgroup2 is mounted
  std::map<std::string, std::string> v1;      // controller ("memory", "pids", ...) -> directory
};
// A v1 hierarchy mounted with a root below "/" (a container's bind of its own cgroup) is
// resolved relative to that root; a path outside every mount of its hierarchy is left out.
CgroupDirs resolve_cgroup_dirs(std::string_view proc_self_cgroup, std::string_view mountinfo);

// The value of `key` in a "key value" per line file (memory.events, memory.oom_control,
// pids.events, memory.stat); nullopt if the key is absent or the value is not a number.
std::optional<std::int64_t> keyed_value(std::string_view text, std::string_view key);

}  // namespace kbfleet::worker
