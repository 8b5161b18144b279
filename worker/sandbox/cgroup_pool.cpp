#include "worker/sandbox/cgroup_pool.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace kbfleet::worker {
namespace {

bool same_limits(const CgroupLimits& a, const CgroupLimits& b) {
  return a.memory_mb == b.memory_mb && a.pids == b.pids && a.cpu_quota_us == b.cpu_quota_us;
}

// Background kernel work yields the CPU to the worker's loop and the spawns it makes (on a
// 2-core host they compete). Linux: the nice value of the calling thread only (setpriority(2)).
void lower_priority() { (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10); }

// Spare names are unique in the process (tests run several pools side by side).
std::string next_spare_name() {
  static std::atomic<std::uint64_t> n{0};
  return "spare-" + std::to_string(++n);
}

// What the pool, its handles and its thread share. Everything below the mutex.
struct Shared {
  explicit Shared(std::unique_ptr<Cgroups> r, std::size_t t) : real(std::move(r)), target(t) {}

  const std::unique_ptr<Cgroups> real;
  const std::size_t target;
  std::mutex mu;
  std::condition_variable work, idle;
  std::vector<std::unique_ptr<TaskCgroup>> to_remove;
  std::deque<std::pair<CgroupLimits, std::unique_ptr<TaskCgroup>>> spares;
  std::optional<CgroupLimits> want;  // the limits of the last create(): what spares are made with
  bool making_failed = false;        // stop retrying until the next create()
  bool busy = false;
  bool started = false;
  bool threadless = false;  // no thread could be started: everything inline
  bool stop = false;
  std::thread thread;

  bool needs_spare() const { return want && !making_failed && spares.size() < target; }
  bool has_work() const { return !to_remove.empty() || needs_spare(); }

  void run() {
    lower_priority();
    std::unique_lock lock(mu);
    for (;;) {
      work.wait(lock, [this] { return stop || has_work(); });
      if (stop) return;
      busy = true;
      auto removing = std::move(to_remove);
      to_remove.clear();
      std::optional<CgroupLimits> make;
      if (needs_spare()) make = want;
      lock.unlock();
      // The spare first: the next task may be waiting for it; the removals wait for nobody.
      Result<std::unique_ptr<TaskCgroup>> made = make_error(ErrorCode::kInternal, "none");
      if (make) made = real->create(next_spare_name(), *make);
      removing.clear();  // each destructor kills what is left and removes the directories
      lock.lock();
      if (make && made) {
        if (want && same_limits(*want, *make)) {
          spares.emplace_back(*make, std::move(*made));
        } else {
          to_remove.push_back(std::move(*made));  // the limits changed meanwhile
        }
      } else if (make) {
        making_failed = true;
        spdlog::warn("spare task cgroup not made; tasks create theirs when they start error=\"{}\"",
                     made.error().message);
      }
      busy = false;
      idle.notify_all();
    }
  }

  // Hands a finished task's cgroup to the thread (inline without one), and wakes the thread for
  // it and for the spares: a task's end, while the worker waits for its next task, is when the
  // thread competes least with a spawn for the CPU and for cgroupfs's lock (create() does not
  // wake it).
  void give_back(std::unique_ptr<TaskCgroup> cg) {
    std::unique_lock lock(mu);
    if (threadless || stop || !started) {
      lock.unlock();
      cg.reset();
      return;
    }
    to_remove.push_back(std::move(cg));
    work.notify_one();
  }
};

// A task's cgroup from the pool: the real one, handed back to the pool's thread when dropped.
class PooledCgroup final : public TaskCgroup {
 public:
  PooledCgroup(std::unique_ptr<TaskCgroup> inner, std::shared_ptr<Shared> shared)
      : inner_(std::move(inner)), shared_(std::move(shared)) {}
  ~PooledCgroup() override { shared_->give_back(std::move(inner_)); }

  const std::vector<std::string>& procs_files() const override { return inner_->procs_files(); }
  bool oom_killed() const override { return inner_->oom_killed(); }
  bool pids_limit_hit() const override { return inner_->pids_limit_hit(); }
  std::optional<std::int64_t> cpu_usage_ms() const override { return inner_->cpu_usage_ms(); }
  bool kill_all() override { return inner_->kill_all(); }

 private:
  std::unique_ptr<TaskCgroup> inner_;
  std::shared_ptr<Shared> shared_;
};

class CgroupPool final : public Cgroups {
 public:
  CgroupPool(std::unique_ptr<Cgroups> real, std::size_t spares)
      : shared_(std::make_shared<Shared>(std::move(real), spares)) {}
  ~CgroupPool() override {
    {
      std::lock_guard lock(shared_->mu);
      shared_->stop = true;
    }
    shared_->work.notify_one();
    if (shared_->thread.joinable()) shared_->thread.join();
    // What the thread left (spares, cgroups handed back) is removed here.
    shared_->spares.clear();
    shared_->to_remove.clear();
  }

  std::string_view version() const override { return shared_->real->version(); }
  std::string location() const override { return shared_->real->location(); }
  bool cpu_bandwidth() const override { return shared_->real->cpu_bandwidth(); }

  Result<std::unique_ptr<TaskCgroup>> create(std::string_view name, const CgroupLimits& limits) const override {
    std::unique_ptr<TaskCgroup> spare;
    {
      std::lock_guard lock(shared_->mu);
      start_thread();
      auto& spares = shared_->spares;
      for (auto it = spares.begin(); it != spares.end();) {
        if (!spare && same_limits(it->first, limits)) {
          spare = std::move(it->second);
        } else if (!same_limits(it->first, limits)) {
          shared_->to_remove.push_back(std::move(it->second));  // other limits: of no more use
        } else {
          ++it;
          continue;
        }
        it = spares.erase(it);
      }
      shared_->want = limits;
      shared_->making_failed = false;
    }
    if (!spare) {
      // No spare ready (the first task, or the limits changed): as without the pool.
      auto made = shared_->real->create(name, limits);
      if (!made) return tl::unexpected(made.error());
      spare = std::move(*made);
    }
    return std::unique_ptr<TaskCgroup>(std::make_unique<PooledCgroup>(std::move(spare), shared_));
  }

  void wait_idle() const {
    std::unique_lock lock(shared_->mu);
    shared_->work.notify_one();
    shared_->idle.wait(lock, [this] { return shared_->threadless || (!shared_->busy && !shared_->has_work()); });
  }

 private:
  // Lazily, so that nothing runs beside the start-up probe (probe.hpp). Under the mutex.
  void start_thread() const {
    if (shared_->started || shared_->threadless) return;
    try {
      shared_->thread = std::thread([s = shared_.get()] { s->run(); });
      shared_->started = true;
    } catch (const std::system_error& e) {
      spdlog::warn("no thread for the task cgroup pool; cgroups are made and removed inline error=\"{}\"", e.what());
      shared_->threadless = true;
    }
  }

  std::shared_ptr<Shared> shared_;
};

}  // namespace

std::shared_ptr<Cgroups> pool_cgroups(std::unique_ptr<Cgroups> real, int slots) {
  return std::make_shared<CgroupPool>(std::move(real), static_cast<std::size_t>(std::max(slots, 1)) + 1);
}

void wait_idle(const Cgroups& cgroups) { dynamic_cast<const CgroupPool&>(cgroups).wait_idle(); }

}  // namespace kbfleet::worker
