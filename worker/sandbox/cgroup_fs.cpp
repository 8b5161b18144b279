// File access on cgroupfs, and the kill and removal both cgroup versions share.
#include "worker/sandbox/cgroup_fs.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/posix/fd.hpp"

namespace kbfleet::worker::cgroup_fs {
namespace {

using Clock = std::chrono::steady_clock;

// How long kill_all() and the removal wait for SIGKILLed processes to leave the cgroup. A killed
// process leaves cgroup.procs when it exits (a zombie is no longer listed, and rmdir succeeds
// with it unreaped), which takes milliseconds even for a large address space; only a process in
// uninterruptible sleep (D state: NFS, a stuck device) takes longer.
constexpr std::chrono::milliseconds kKillBound{2000};
// Pause between two reads of cgroup.procs while processes exit. v1 has no notification for
// "empty" that works from a poll loop (release_agent needs a helper binary), so this is a short
// bounded sleep rather than an event.
constexpr long kKillPauseNs = 1'000'000;

void pause_briefly() {
  timespec ts{0, kKillPauseNs};
  while (::nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

// The pids in a cgroup.procs file; empty if it is unreadable (the cgroup is gone).
std::vector<pid_t> read_pids(const std::string& procs) {
  std::vector<pid_t> out;
  auto text = read_file(procs);
  if (!text) return out;
  std::string_view rest = *text;
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    pid_t pid = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), pid);
    if (ec == std::errc{} && end == line.data() + line.size() && pid > 0) out.push_back(pid);
  }
  return out;
}

// The inode of this process's pid namespace (0 if unknown): task cgroup names carry it with the
// worker's pid, so a worker never mistakes a live worker of another namespace for a dead one.
// A process cannot change its own pid namespace, so one stat per process is enough.
ino_t pid_namespace() {
  static const ino_t ns = [] {
    struct stat st {};
    return ::stat("/proc/self/ns/pid", &st) == 0 ? st.st_ino : 0;
  }();
  return ns;
}

// A dead worker's task cgroup, only to be killed and removed.
class StaleDir final : public TaskDirs {
 public:
  explicit StaleDir(const std::string& dir) : TaskDirs({dir}, std::nullopt) {}
  bool oom_killed() const override { return false; }
  bool pids_limit_hit() const override { return false; }
  std::optional<std::int64_t> cpu_usage_ms() const override { return std::nullopt; }
};

}  // namespace

Error layer_error(std::string_view call, std::string_view object, int err) {
  Error e = errno_error(call, object, err).value();
  e.code = ErrorCode::kSandboxUnavailable;
  e.details["layer"] = "cgroup";
  return e;
}

Result<std::string> read_file(const std::string& path) {
  posix::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open", path, errno);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read", path, errno);
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

Status write_file(const std::string& path, std::string_view value) {
  posix::Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return tl::unexpected(layer_error("open", path, errno));
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return tl::unexpected(layer_error("write", path + " <- " + std::string(value), errno));
  return {};
}

Result<bool> write_if_present(const std::string& path, std::string_view value) {
  if (!exists(path)) return false;
  if (auto st = write_file(path, value); !st) return tl::unexpected(st.error());
  return true;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::optional<std::int64_t> read_keyed(const std::string& path, std::string_view key) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  return keyed_value(*text, key);
}

bool lists_controller(std::string_view list, std::string_view controller) {
  while (!list.empty()) {
    auto sep = list.find_first_of(" \n");
    if (list.substr(0, sep) == controller) return true;
    if (sep == std::string_view::npos) break;
    list.remove_prefix(sep + 1);
  }
  return false;
}

Result<std::string> task_dir_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 200 && name.front() != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return make_error(ErrorCode::kInvalidArgument,
                      "task cgroup name must be one path component of [A-Za-z0-9._-]: " + std::string(name));
  }
  return "kbfleet-" + std::to_string(pid_namespace()) + "-" + std::to_string(::getpid()) + "-" + std::string(name);
}

void remove_stale(const std::string& parent) {
  const std::string ours = "kbfleet-" + std::to_string(pid_namespace()) + "-";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    // Only workers of our pid namespace: a pid means nothing in another one.
    if (name.compare(0, ours.size(), ours) != 0 || !entry.is_directory(ec)) continue;
    pid_t pid = 0;
    const char* digits = name.data() + ours.size();
    auto [end, parse_ec] = std::from_chars(digits, name.data() + name.size(), pid);
    if (parse_ec != std::errc{} || end == name.data() + name.size() || *end != '-' || pid <= 0) continue;
    // Alive (another worker sharing this parent, or a reused pid): not ours to judge.
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    spdlog::info("removing the task cgroup of a worker that is gone dir={}", entry.path().string());
    StaleDir stale(entry.path().string());
    stale.adopt();  // its destructor kills what is left and removes it
  }
}

TaskDirs::TaskDirs(std::vector<std::string> dirs, std::optional<std::string> kill_file)
    : dirs_(std::move(dirs)), kill_file_(std::move(kill_file)) {
  for (const auto& d : dirs_) procs_.push_back(d + "/cgroup.procs");
}

Status TaskDirs::make() {
  for (; made_ < dirs_.size(); ++made_) {
    // 0755: the worker (owner) manages it; nothing in the task can write to it as another user.
    if (::mkdir(dirs_[made_].c_str(), 0755) < 0) {
      return tl::unexpected(layer_error("mkdir", dirs_[made_], errno));
    }
  }
  return {};
}

bool TaskDirs::kill_all() {
  if (made_ == 0) return true;
  // cgroup.kill (v2, Linux 5.14) kills every process atomically, also one forking right now. The
  // per-pid loop can race a fork: a child created after the read shows up in the next round, and
  // pids.max bounds how many there can be, so the loop converges (v1 has no atomic kill short of
  // the freezer controller).
  if (kill_file_) {
    if (auto st = write_file(*kill_file_, "1"); !st) {
      spdlog::warn("cgroup kill failed error=\"{}\"", st.error().message);
      kill_file_.reset();  // fall back to the per-pid loop for the rest of this cgroup's life
    }
  }
  auto deadline = Clock::now() + kKillBound;
  for (;;) {
    bool empty = true;
    for (std::size_t i = 0; i < made_; ++i) {
      for (pid_t pid : read_pids(procs_[i])) {
        empty = false;
        if (!kill_file_) ::kill(pid, SIGKILL);
      }
    }
    if (empty) return true;
    if (Clock::now() >= deadline) return false;
    pause_briefly();
  }
}

TaskDirs::~TaskDirs() {
  if (made_ == 0) return;
  if (!kill_all()) {
    spdlog::error("task cgroup still has processes after SIGKILL dir={}", dirs_.front());
  }
  auto deadline = Clock::now() + kKillBound;
  // Children first would matter for nested cgroups; a task cgroup has none we created. rmdir
  // answers EBUSY while a process is still leaving; retry within the bound.
  for (std::size_t i = made_; i-- > 0;) {
    while (::rmdir(dirs_[i].c_str()) < 0) {
      int err = errno;
      if (err == ENOENT) break;
      if (err != EBUSY || Clock::now() >= deadline) {
        spdlog::error("task cgroup not removed call=rmdir dir={} error=\"{}\"", dirs_[i], std::strerror(err));
        break;
      }
      pause_briefly();
    }
  }
}

}  // namespace kbfleet::worker::cgroup_fs
