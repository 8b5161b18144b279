#pragma once
// Task cgroups made before the task arrives and removed after it ended, on a thread of their own,
// so that neither waits in the worker's loop: per task on cgroup v1 that was three mkdirs, five
// writes, three rmdirs and two rounds of reading cgroup.procs, about a quarter of the loop's CPU
// time for a short task (docs/performance.md, end to end).
//
// Guarantees, on top of those of cgroup.hpp (each with a test in
// tests/worker/sandbox/cgroup_pool_test.cpp):
//  - every create() returns a cgroup no task has used: a spare is a fresh directory that nothing
//    ever joined, so a task starts with no processes, no CPU usage, no memory charged and no
//    OOM or pids events of another task; cgroups are never reused;
//  - a spare carries exactly the limits create() was asked for: spares are made with the limits
//    of the last create(), and one with other limits is never handed out (then create() makes
//    one in place, as the unpooled layer does);
//  - a TaskCgroup from create() is killed and removed on the pool's thread once its owner drops
//    it (HandlerProcess kills the task's processes itself before that, when the handler is
//    reaped or the run is dropped); wait_idle() waits for that.
// The thread runs at nice 10 and is woken when a task's cgroup is handed back, not by create(),
// so that its mkdirs and rmdirs fall between tasks rather than beside a spawn.
// Without a thread (std::thread failed) create() and removal happen inline, as without the pool.
#include <memory>

#include "worker/sandbox/cgroup.hpp"

namespace kbfleet::worker {

// Wraps `real` (from probe_cgroups()). Keeps slots + 1 cgroups ready (`slots` at least 1): one
// per task that can run at once, and one more, so that a task starting right after another
// ended, before the thread got the CPU to replace the one that task took, still finds one.
[[nodiscard]] std::shared_ptr<Cgroups> pool_cgroups(std::unique_ptr<Cgroups> real, int slots);

// For tests: blocks until the pool's thread has made the spares it was asked for and removed every
// cgroup handed back so far. `cgroups` must come from pool_cgroups().
void wait_idle(const Cgroups& cgroups);

}  // namespace kbfleet::worker
