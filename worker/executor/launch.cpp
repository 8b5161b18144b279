#include "worker/executor/launch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "worker/sandbox/capabilities.hpp"
#include "worker/sandbox/init/init_status.hpp"
#include "worker/sandbox/isolation.hpp"
#include "worker/sandbox/landlock.hpp"
#include "worker/sandbox/seccomp.hpp"

namespace kbfleet::worker {
namespace {

// Steps the child can fail at, reported to the parent as {step, errno}.
enum class Step : std::int32_t {
  kDupErrorPipe,
  kSetpgid,
  kDupStdin,
  kDupStdout,
  kDupStderr,
  kDupFd3,
  kCloseFds,
  kSignalMask,
  kRlimitCore,
  kRlimitNofile,
  kRlimitCpu,
  kRlimitAs,
  kCgroupJoin,
  kUnshareNet,
  kMounts,
  kHostname,
  kSetnsUser,
  kSetgroups,
  kSetgid,
  kSetuid,
  kDropCaps,
  kNoNewPrivs,
  kLandlock,
  kSeccomp,
  kChdir,
  kPdeathsig,
  kParentGone,
  kExecve,
  kExecInit,
};

// Code that runs in the child runs on a stack ASan did not set up (clone with CLONE_VM): its
// __asan_handle_no_return before each noreturn call misreads that stack, so those functions are
// not instrumented. They make raw syscalls only.
#define KBFLEET_CHILD_SIDE __attribute__((no_sanitize("address")))

struct ChildError {
  std::int32_t step;
  std::int32_t err;
  std::int32_t index;  // which of several objects (the cgroup.procs file), else 0
};

// The child's fds while it sets up, right above the handler's 0-3: init's status pipe (kept
// across exec), then the error pipe and the objects the layers need, all O_CLOEXEC, so execve
// closes them (EOF on the error pipe = success). Everything from kFirstSourceFd on is closed.
constexpr int kStatusFd = init::kStatusFd;  // 4
constexpr int kErrorFd = 5;
constexpr int kLandlockFd = 6;
constexpr int kUsernsFd = 7;
constexpr int kInitFd = 8;
constexpr int kWorkerPidFd = 9;
constexpr int kNetnsFd = 10;
constexpr int kRootTemplateFd = 11;
constexpr int kNsSendFd = 12;  // the child sends its mount namespace to the worker on this socket
// The parent moves every fd it hands to the child at or above this number, so the dup calls
// into 0-12 never overwrite a source that happens to sit there (a daemon may have 0-2 closed).
constexpr int kFirstSourceFd = 13;

struct Rlimit {
  bool set = false;
  rlimit value{};
};

// Everything the child needs, prepared before fork(): the child only makes syscalls.
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* workspace;
  int stdin_fd, stdout_fd, stderr_fd, fd3_fd, error_fd;
  Rlimit core, nofile, cpu, as;
  const char* const* cgroup_procs;  // cgroup.procs files to join
  int cgroup_count;
  bool new_net;
  int worker_pidfd;  // readable once the worker has exited
  int max_fd;  // upper bound for the close loop when close_range is unavailable
  // Sandbox layers (isolation.hpp); all absent for a plain process.
  const Isolation* iso;
  int status_fd, landlock_fd, userns_fd, init_fd, netns_fd, root_template_fd, ns_send_fd;  // sources, or -1
  char* const* init_argv;                          // {"kbfleet-init", path, args..., nullptr}
};

[[noreturn]] KBFLEET_CHILD_SIDE void child_fail(int error_fd, Step step, int index = 0) noexcept {
  ChildError rec{static_cast<std::int32_t>(step), errno, index};
  while (::write(error_fd, &rec, sizeof rec) < 0 && errno == EINTR) {
  }
  ::_exit(127);
}

// The decimal digits of `pid` into `buf` (no allocation: runs in the child). Returns the length.
KBFLEET_CHILD_SIDE std::size_t format_pid(pid_t pid, char (&buf)[16]) noexcept {
  char rev[16];
  std::size_t n = 0;
  auto v = static_cast<unsigned long>(pid);
  do {
    rev[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && n < sizeof rev);
  for (std::size_t i = 0; i < n; ++i) buf[i] = rev[n - 1 - i];
  return n;
}

// Writes the child's pid into each cgroup.procs file; false with errno set on the first failure,
// whose index lands in *failed.
KBFLEET_CHILD_SIDE bool join_cgroups(const ChildPlan& p, int* failed) noexcept {
  char digits[16];
  std::size_t len = format_pid(::getpid(), digits);
  for (int i = 0; i < p.cgroup_count; ++i) {
    *failed = i;
    int fd = ::open(p.cgroup_procs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n;
    do {
      n = ::write(fd, digits, len);
    } while (n < 0 && errno == EINTR);
    int write_errno = errno;
    ::close(fd);
    if (n < 0) {
      errno = write_errno;
      return false;
    }
  }
  return true;
}

// Moves `from` to `to` with O_CLOEXEC, or closes `to` when there is no source (whatever the worker
// had open there must not reach the handler).
KBFLEET_CHILD_SIDE bool place_fd(int from, int to) noexcept {
  if (from < 0) {
    ::close(to);
    return true;
  }
  return ::dup3(from, to, O_CLOEXEC) >= 0;
}

// Landlock rules for the mounts that exist only in the child (tmpfs /tmp, /dev/shm, /proc).
KBFLEET_CHILD_SIDE bool allow_fresh_mounts(const Isolation& iso) noexcept {
  for (const char* path : MountPlan::kFreshWritable) {
    if (landlock_allow_path(kLandlockFd, path, iso.landlock_fresh_write) < 0) return false;
  }
  for (const char* path : MountPlan::kFreshReadable) {
    if (landlock_allow_path(kLandlockFd, path, iso.landlock_fresh_read) < 0) return false;
  }
  return true;
}

// Sends the child's own mount namespace to the worker (ns_hold.hpp), so that its teardown does
// not happen in the task's exit. Best effort: without it the namespace dies with the task, as a
// namespace does, only slower. Stack only (no allocation).
KBFLEET_CHILD_SIDE void send_mount_ns() noexcept {
  int ns = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  if (ns < 0) return;
  char byte = 'n';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  __builtin_memcpy(CMSG_DATA(c), &ns, sizeof ns);
  while (::sendmsg(kNsSendFd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
  ::close(ns);
}

// The sandbox layers, in the order isolation.hpp gives. The cgroup and network namespace are
// joined before (in run_child), as root.
KBFLEET_CHILD_SIDE void apply_isolation(const ChildPlan& p, const Isolation& iso) noexcept {
  const int err = kErrorFd;
  if (iso.root) {
    int failed = 0;
    if (iso.root->apply(kRootTemplateFd, &failed) < 0) child_fail(err, Step::kMounts, failed);
    if (p.ns_send_fd >= 0) send_mount_ns();
    static constexpr char kHostname[] = "kbfleet";
    if (::sethostname(kHostname, sizeof kHostname - 1) < 0) child_fail(err, Step::kHostname);
  }
  if (iso.identity) {
    if (::setns(kUsernsFd, CLONE_NEWUSER) < 0) child_fail(err, Step::kSetnsUser);
    // Raw syscalls, not glibc's wrappers: those apply the change to every thread of the process
    // they believe they run in (nptl's setxid: a signal to each of the worker's threads, then a
    // wait), which in this CLONE_VM child are the worker's threads. The pid namespace only
    // makes those signals fail with ESRCH; they cost three round trips per spawn regardless.
    if (::syscall(SYS_setgroups, 0, nullptr) < 0) child_fail(err, Step::kSetgroups);
    constexpr gid_t g = SlotIdentity::kInsideGid;
    constexpr uid_t u = SlotIdentity::kInsideUid;
    if (::syscall(SYS_setresgid, g, g, g) < 0) child_fail(err, Step::kSetgid);
    // Keep the permitted set across the uid change: drop_all_capabilities() needs CAP_SETPCAP to
    // empty the bounding set; it clears and locks KEEPCAPS itself.
    if (::prctl(PR_SET_KEEPCAPS, 1) < 0) child_fail(err, Step::kSetuid);
    if (::syscall(SYS_setresuid, u, u, u) < 0) child_fail(err, Step::kSetuid);
  }
  if (iso.drop_capabilities && drop_all_capabilities() < 0) child_fail(err, Step::kDropCaps);
  if (!iso.root && ::chdir(p.workspace) < 0) child_fail(err, Step::kChdir);
  if (set_no_new_privs() < 0) child_fail(err, Step::kNoNewPrivs);
  if (iso.landlock) {
    if (iso.root && !allow_fresh_mounts(iso)) child_fail(err, Step::kLandlock);
    if (apply_landlock(kLandlockFd) < 0) child_fail(err, Step::kLandlock);
  }
  if (iso.seccomp != nullptr && apply_seccomp(iso.seccomp) < 0) child_fail(err, Step::kSeccomp);
}

// Whether the child execs kbfleet-init (a new root), rather than the handler itself.
KBFLEET_CHILD_SIDE bool execs_init(const ChildPlan& p) noexcept { return p.iso != nullptr && p.iso->root; }

// Default dispositions first, then an empty mask. SIGKILL/SIGSTOP and glibc's reserved ones
// fail: ignored.
KBFLEET_CHILD_SIDE void reset_signals(int err) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) < 0) child_fail(err, Step::kSignalMask);
}

// Runs in the child between clone and execve, in the worker's memory (CLONE_VM): no allocation,
// no exceptions, no logging.
[[noreturn]] KBFLEET_CHILD_SIDE void run_child(const ChildPlan& p) noexcept {
  if (::dup3(p.error_fd, kErrorFd, O_CLOEXEC) < 0) child_fail(p.error_fd, Step::kDupErrorPipe);
  const int err = kErrorFd;
  // Early, so that a worker dying mid-setup takes us along; set again after the uid change,
  // which clears it.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(err, Step::kPdeathsig);
  if (::setpgid(0, 0) < 0) child_fail(err, Step::kSetpgid);
  if (::dup2(p.stdin_fd, STDIN_FILENO) < 0) child_fail(err, Step::kDupStdin);
  if (::dup2(p.stdout_fd, STDOUT_FILENO) < 0) child_fail(err, Step::kDupStdout);
  if (::dup2(p.stderr_fd, STDERR_FILENO) < 0) child_fail(err, Step::kDupStderr);
  if (::dup2(p.fd3_fd, 3) < 0) child_fail(err, Step::kDupFd3);
  if ((p.status_fd >= 0 && ::dup2(p.status_fd, kStatusFd) < 0) || !place_fd(p.landlock_fd, kLandlockFd) ||
      !place_fd(p.userns_fd, kUsernsFd) || !place_fd(p.init_fd, kInitFd) ||
      !place_fd(p.worker_pidfd, kWorkerPidFd) || !place_fd(p.netns_fd, kNetnsFd) ||
      !place_fd(p.root_template_fd, kRootTemplateFd) || !place_fd(p.ns_send_fd, kNsSendFd)) {
    child_fail(err, Step::kDupErrorPipe);
  }
  if (::close_range(kFirstSourceFd, ~0U, 0) < 0) {
    if (errno != ENOSYS && errno != EINVAL) child_fail(err, Step::kCloseFds);
    for (int fd = kFirstSourceFd; fd <= p.max_fd; ++fd) ::close(fd);
  }
  if (p.status_fd < 0) ::close(kStatusFd);

  // The parent blocked every signal around clone() so no handler of the worker runs here. A
  // handler exec'd directly needs default dispositions and an empty mask. kbfleet-init needs
  // neither: it blocks everything and sets every disposition itself first, and execve resets
  // the worker's handlers anyway, so signals simply stay blocked until then (65 syscalls less).
  if (!execs_init(p)) reset_signals(err);

  if (p.core.set && ::setrlimit(RLIMIT_CORE, &p.core.value) < 0) child_fail(err, Step::kRlimitCore);
  if (p.nofile.set && ::setrlimit(RLIMIT_NOFILE, &p.nofile.value) < 0) {
    child_fail(err, Step::kRlimitNofile);
  }
  if (p.cpu.set && ::setrlimit(RLIMIT_CPU, &p.cpu.value) < 0) child_fail(err, Step::kRlimitCpu);
  if (p.as.set && ::setrlimit(RLIMIT_AS, &p.as.value) < 0) child_fail(err, Step::kRlimitAs);
  // Into the task cgroup before anything of the handler runs, so all its memory and processes
  // count and die together. The child joins itself, rather than the parent moving it after
  // clone, so there is no window in which it could fork outside the cgroup.
  int failed_cgroup = 0;
  if (!join_cgroups(p, &failed_cgroup)) child_fail(err, Step::kCgroupJoin, failed_cgroup);
  // The slot's empty network namespace if it has one, else a new one.
  if (p.new_net && (p.netns_fd >= 0 ? ::setns(kNetnsFd, CLONE_NEWNET) : ::unshare(CLONE_NEWNET)) < 0) {
    child_fail(err, Step::kUnshareNet);
  }
  if (p.iso != nullptr) {
    apply_isolation(p, *p.iso);
  } else if (::chdir(p.workspace) < 0) {
    child_fail(err, Step::kChdir);
  }

  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(err, Step::kPdeathsig);
  // PR_SET_PDEATHSIG fires only for a parent death after the call; the worker's pidfd tells
  // whether it already died (getppid() cannot: it is 0 for pid 1 of a new pid namespace).
  pollfd worker{kWorkerPidFd, POLLIN, 0};
  if (p.worker_pidfd >= 0 && ::poll(&worker, 1, 0) != 0) {
    errno = ESRCH;
    child_fail(err, Step::kParentGone);
  }
  if (execs_init(p)) {
    ::execveat(kInitFd, "", p.init_argv, p.envp, AT_EMPTY_PATH);
    child_fail(err, Step::kExecInit);
  }
  ::execve(p.path, p.argv, p.envp);
  child_fail(err, Step::kExecve);
}

KBFLEET_CHILD_SIDE int child_entry(void* plan) { run_child(*static_cast<const ChildPlan*>(plan)); }

// The call and object a failed step names in EXEC_FAILED ("execve(/bin/x): Permission denied"),
// and the step reported in details (the call, unless a sandbox layer is named).
struct StepName {
  const char* call;
  std::string object;
  const char* step = nullptr;
};

StepName step_name(Step step, int index, const LaunchSpec& spec) {
  switch (step) {
    case Step::kDupErrorPipe: return {"dup3", "error pipe"};
    case Step::kSetpgid: return {"setpgid", "0, 0"};
    case Step::kDupStdin: return {"dup2", "stdin"};
    case Step::kDupStdout: return {"dup2", "stdout"};
    case Step::kDupStderr: return {"dup2", "stderr"};
    case Step::kDupFd3: return {"dup2", "fd 3"};
    case Step::kCloseFds: return {"close_range", "5, ~0"};
    case Step::kSignalMask: return {"sigprocmask", "SIG_SETMASK"};
    case Step::kRlimitCore: return {"setrlimit", "RLIMIT_CORE"};
    case Step::kRlimitNofile: return {"setrlimit", "RLIMIT_NOFILE"};
    case Step::kRlimitCpu: return {"setrlimit", "RLIMIT_CPU"};
    case Step::kRlimitAs: return {"setrlimit", "RLIMIT_AS"};
    case Step::kCgroupJoin: {
      bool known = index >= 0 && static_cast<std::size_t>(index) < spec.join_cgroups.size();
      return {"write", known ? spec.join_cgroups[static_cast<std::size_t>(index)] : "cgroup.procs", "cgroup"};
    }
    case Step::kUnshareNet: return {"unshare/setns", "CLONE_NEWNET", "netns"};
    case Step::kMounts: {
      bool known = spec.isolation && spec.isolation->root;
      return {"building the task's root", known ? spec.isolation->root->describe(index) : "mount", "mntns"};
    }
    case Step::kHostname: return {"sethostname", "kbfleet", "utsns"};
    case Step::kSetnsUser: return {"setns", "the slot's user namespace", "userns"};
    case Step::kSetgroups: return {"setgroups", "[]", "userns"};
    case Step::kSetgid: return {"setresgid", "1000", "userns"};
    case Step::kSetuid: return {"setresuid", "1000", "userns"};
    case Step::kDropCaps: return {"capset", "no capabilities", "caps"};
    case Step::kNoNewPrivs: return {"prctl", "PR_SET_NO_NEW_PRIVS", "caps"};
    case Step::kLandlock: return {"landlock_restrict_self", "the task's ruleset", "landlock"};
    case Step::kSeccomp: return {"seccomp", "the task filter", "seccomp"};
    case Step::kChdir: return {"chdir", spec.workspace.string()};
    case Step::kPdeathsig: return {"prctl", "PR_SET_PDEATHSIG"};
    case Step::kParentGone: return {"pidfd", "the worker exited during spawn"};
    case Step::kExecve: return {"execve", spec.exec.string()};
    case Step::kExecInit: return {"execveat", "kbfleet-init", "pidns"};
  }
  return {"unknown step", std::to_string(static_cast<int>(step))};
}

Status validate(const LaunchSpec& spec) {
  if (!spec.exec.is_absolute()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "handler program path must be absolute: " + spec.exec.string());
  }
  auto has_nul = [](const std::string& s) { return s.find('\0') != std::string::npos; };
  for (const auto& arg : spec.args) {
    if (has_nul(arg)) return make_error(ErrorCode::kInvalidArgument, "handler argument has a NUL byte");
  }
  for (const auto& var : spec.env) {
    if (has_nul(var)) return make_error(ErrorCode::kInvalidArgument, "handler env entry has a NUL byte");
  }
  for (const auto& procs : spec.join_cgroups) {
    if (has_nul(procs) || procs.empty() || procs.front() != '/') {
      return make_error(ErrorCode::kInvalidArgument, "cgroup.procs path must be absolute: " + procs);
    }
  }
  return {};
}

// The fd the child reads as stdin: a sealed memfd holding the bytes, or /dev/null.
Result<posix::Fd> open_stdin(const std::string& bytes) {
  if (bytes.empty()) {
    posix::Fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd) return errno_error("open", "/dev/null", errno);
    return fd;
  }
  posix::Fd fd(::memfd_create("kbfleet-stdin", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return errno_error("memfd_create", "kbfleet-stdin", errno);
  if (auto st = posix::write_all(fd.get(), bytes); !st) return tl::unexpected(st.error());
  // Sealed: the handler's stdin is read-only and fixed-size, not a writable tmpfs file it could
  // grow (memfd_create(2), "File sealing").
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
    return errno_error("fcntl(F_ADD_SEALS)", "stdin memfd", errno);
  }
  if (::lseek(fd.get(), 0, SEEK_SET) < 0) return errno_error("lseek", "stdin memfd", errno);
  return fd;
}

Result<posix::Fd> move_high(posix::Fd fd, const char* what) {
  posix::Fd high(::fcntl(fd.get(), F_DUPFD_CLOEXEC, kFirstSourceFd));
  if (!high) return errno_error("fcntl(F_DUPFD_CLOEXEC)", what, errno);
  return high;
}

Status set_nonblocking(const posix::Fd& fd, const char* what) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return errno_error("fcntl(O_NONBLOCK)", what, errno);
  }
  return {};
}

// {want, want}, lowered to the worker's hard limit: an unprivileged worker cannot raise it, and
// the handler gets no more than the worker has anyway.
Rlimit capped_rlimit(int resource, rlim_t soft, rlim_t hard) {
  rlimit current{};
  Rlimit out;
  out.set = true;
  out.value = {soft, hard};
  if (::getrlimit(resource, &current) == 0 && current.rlim_max != RLIM_INFINITY) {
    out.value.rlim_max = std::min(hard, current.rlim_max);
    out.value.rlim_cur = std::min(soft, out.value.rlim_max);
  }
  return out;
}

// Who enforces memory_mb: RLIMIT_AS per process, or the task cgroup the child joins.
enum class MemoryBy { kRlimitAs, kCgroup };

void plan_rlimits(const Limits& limits, MemoryBy memory_by, ChildPlan& plan) {
  plan.core = capped_rlimit(RLIMIT_CORE, 0, 0);
  if (limits.max_open_files > 0) {
    auto n = static_cast<rlim_t>(limits.max_open_files);
    plan.nofile = capped_rlimit(RLIMIT_NOFILE, n, n);
  }
  if (limits.cpu_ms > 0) {
    // RLIMIT_CPU counts whole seconds: SIGXCPU at the soft limit, SIGKILL at the hard one.
    auto soft = static_cast<rlim_t>((limits.cpu_ms + 999) / 1000);
    plan.cpu = capped_rlimit(RLIMIT_CPU, soft, soft + 1);
  }
  if (limits.memory_mb > 0 && memory_by == MemoryBy::kRlimitAs) {
    constexpr rlim_t kMiB = 1 << 20;
    auto mb = static_cast<rlim_t>(limits.memory_mb);
    rlim_t bytes = mb > RLIM_INFINITY / kMiB ? RLIM_INFINITY : mb * kMiB;
    plan.as = capped_rlimit(RLIMIT_AS, bytes, bytes);
  }
}

// Reads the child's error pipe until EOF (execve closed it: success) or a record arrives.
Result<std::optional<ChildError>> read_child_error(const posix::Fd& error_read) {
  ChildError rec{};
  ssize_t n;
  do {
    n = ::read(error_read.get(), &rec, sizeof rec);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno_error("read", "spawn error pipe", errno);
  if (n == 0) return std::optional<ChildError>{};
  if (n != sizeof rec) {
    return make_error(ErrorCode::kIoError, "short read from the spawn error pipe");
  }
  return std::optional<ChildError>{rec};
}

void reap_blocking(pid_t pid) {
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// Both ends of every channel to the child, and high duplicates of the objects its sandbox layers
// use. The child's ends sit at kFirstSourceFd or above.
struct Channels {
  posix::Fd stdin_src;
  posix::Pipe out, err, fd3, error;
  posix::Pipe status;  // from kbfleet-init; only with a new root
  posix::Fd landlock, userns, init, worker_pidfd, netns, root_template;
  posix::Fd ns_receive, ns_send;  // a socketpair for the child's mount namespace; only with a new root
};

Result<posix::Fd> dup_high(int fd, const char* what) {
  if (fd < 0) return posix::Fd();
  posix::Fd high(::fcntl(fd, F_DUPFD_CLOEXEC, kFirstSourceFd));
  if (!high) return errno_error("fcntl(F_DUPFD_CLOEXEC)", what, errno);
  return high;
}

Status make_sandbox_channels(const Isolation& iso, Channels& c) {
  for (auto [to, from, what] : {std::tuple{&c.landlock, iso.landlock.get(), "landlock ruleset"},
                                std::tuple{&c.userns, iso.identity ? iso.identity->userns_fd : -1, "user namespace"},
                                std::tuple{&c.init, iso.root ? iso.init_exe : -1, "kbfleet-init"},
                                std::tuple{&c.root_template, iso.root_template ? iso.root_template->ns_fd() : -1,
                                           "root template"},
                                std::tuple{&c.netns, iso.netns_fd >= 0 ? iso.netns_fd : iso.identity ? iso.identity->netns_fd : -1,
                                           "network namespace"}}) {
    auto high = dup_high(from, what);
    if (!high) return tl::unexpected(high.error());
    *to = std::move(*high);
  }
  if (!iso.root) return {};
  if (iso.init_exe < 0) return make_error(ErrorCode::kSandboxUnavailable, "kbfleet-init was not found next to the worker");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    return errno_error("socketpair", "mount namespace channel", errno);
  }
  c.ns_receive = posix::Fd(sv[0]);
  auto send_high = move_high(posix::Fd(sv[1]), "mount namespace channel");
  if (!send_high) return tl::unexpected(send_high.error());
  c.ns_send = std::move(*send_high);
  auto made = posix::make_pipe();
  if (!made) return tl::unexpected(made.error());
  auto write_high = move_high(std::move(made->write), "status pipe");
  if (!write_high) return tl::unexpected(write_high.error());
  c.status.read = std::move(made->read);
  c.status.write = std::move(*write_high);
  return {};
}

Result<Channels> make_channels(const LaunchSpec& spec) {
  Channels c;
  auto stdin_src = open_stdin(spec.stdin_bytes);
  if (!stdin_src) return tl::unexpected(stdin_src.error());
  auto stdin_high = move_high(std::move(*stdin_src), "stdin");
  if (!stdin_high) return tl::unexpected(stdin_high.error());
  c.stdin_src = std::move(*stdin_high);
  for (auto [pipe, what] : {std::pair{&c.out, "stdout pipe"}, std::pair{&c.err, "stderr pipe"},
                            std::pair{&c.fd3, "fd 3 pipe"}, std::pair{&c.error, "error pipe"}}) {
    auto made = posix::make_pipe();
    if (!made) return tl::unexpected(made.error());
    auto write_high = move_high(std::move(made->write), what);
    if (!write_high) return tl::unexpected(write_high.error());
    pipe->read = std::move(made->read);
    pipe->write = std::move(*write_high);
    if (pipe == &c.error) continue;  // read blocking: the parent waits on it for the exec
    if (auto st = set_nonblocking(pipe->read, what); !st) return tl::unexpected(st.error());
  }
  c.worker_pidfd = posix::Fd(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  if (!c.worker_pidfd) return errno_error("pidfd_open", "the worker itself", errno);
  auto high = dup_high(c.worker_pidfd.get(), "worker pidfd");
  if (!high) return tl::unexpected(high.error());
  c.worker_pidfd = std::move(*high);
  if (spec.isolation) {
    if (auto st = make_sandbox_channels(*spec.isolation, c); !st) return tl::unexpected(st.error());
  }
  return c;
}

// execve's argument arrays, pointing into strings this object owns.
struct ExecArrays {
  explicit ExecArrays(const LaunchSpec& spec)
      : path(spec.exec.string()), workspace(spec.workspace.string()), args(spec.args),
        env(spec.env) {
    argv.push_back(path.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    init_argv.push_back(init_name.data());
    init_argv.insert(init_argv.end(), argv.begin(), argv.end());
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    for (const auto& procs : spec.join_cgroups) cgroup_procs.push_back(procs.c_str());
  }
  ExecArrays(const ExecArrays&) = delete;
  ExecArrays& operator=(const ExecArrays&) = delete;

  std::string path, workspace;
  std::string init_name = "kbfleet-init";
  std::vector<std::string> args, env;
  std::vector<char*> argv, envp, init_argv;
  std::vector<const char*> cgroup_procs;  // point into the LaunchSpec, which outlives the spawn
};

ChildPlan make_plan(const LaunchSpec& spec, const ExecArrays& exec, const Channels& c) {
  ChildPlan plan{};
  plan.path = exec.path.c_str();
  plan.argv = exec.argv.data();
  plan.envp = exec.envp.data();
  plan.workspace = exec.workspace.c_str();
  plan.stdin_fd = c.stdin_src.get();
  plan.stdout_fd = c.out.write.get();
  plan.stderr_fd = c.err.write.get();
  plan.fd3_fd = c.fd3.write.get();
  plan.error_fd = c.error.write.get();
  plan.cgroup_procs = exec.cgroup_procs.data();
  plan.cgroup_count = static_cast<int>(exec.cgroup_procs.size());
  plan_rlimits(spec.limits, spec.join_cgroups.empty() ? MemoryBy::kRlimitAs : MemoryBy::kCgroup, plan);
  plan.new_net = spec.net != NetMode::kHost;
  plan.worker_pidfd = c.worker_pidfd.get();
  long open_max = ::sysconf(_SC_OPEN_MAX);
  plan.max_fd = open_max > 0 && open_max < (1 << 20) ? static_cast<int>(open_max) : (1 << 20);
  plan.iso = spec.isolation.get();
  plan.status_fd = c.status.write ? c.status.write.get() : -1;
  plan.landlock_fd = c.landlock ? c.landlock.get() : -1;
  plan.userns_fd = c.userns ? c.userns.get() : -1;
  plan.init_fd = c.init ? c.init.get() : -1;
  plan.netns_fd = c.netns ? c.netns.get() : -1;
  plan.root_template_fd = c.root_template ? c.root_template.get() : -1;
  plan.ns_send_fd = c.ns_send ? c.ns_send.get() : -1;
  plan.init_argv = const_cast<char* const*>(exec.init_argv.data());
  return plan;
}

// The stack the child runs on until it execs. It shares the worker's memory (CLONE_VM) and the
// worker waits (CLONE_VFORK), as posix_spawn does: no page tables are copied, so the cost does
// not grow with the worker's size.
constexpr std::size_t kChildStack = 256 << 10;

int clone_flags(const LaunchSpec& spec) {
  int flags = CLONE_VM | CLONE_VFORK | SIGCHLD;
  // No CLONE_NEWNS: the child makes its mount namespace as a copy of the root template
  // (mounts.hpp), not of the worker's.
  if (spec.isolation && spec.isolation->root) flags |= CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  return flags;
}

// clone() with every signal blocked across it, so the child runs none of the worker's handlers
// before it resets them; the parent restores its mask right after.
Result<pid_t> clone_child(const LaunchSpec& spec, const ChildPlan& plan) {
  void* stack = ::mmap(nullptr, kChildStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return errno_error("mmap", "child stack", errno);
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::clone(child_entry, static_cast<char*>(stack) + kChildStack, clone_flags(spec),
                      const_cast<ChildPlan*>(&plan));
  int clone_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::munmap(stack, kChildStack);
  if (pid < 0) {
    auto e = errno_error("clone", plan.path, clone_errno);
    if (spec.isolation && spec.isolation->root) {
      e.value().code = ErrorCode::kSandboxUnavailable;
      e.value().details["step"] = "namespaces";
    }
    return e;
  }
  return pid;
}

// Waits for the child to exec. On failure reaps it and returns EXEC_FAILED naming the step, or
// SANDBOX_UNAVAILABLE when it is the setup of a sandbox layer that failed.
Status await_exec(pid_t pid, const posix::Fd& error_read, const LaunchSpec& spec) {
  auto child_error = read_child_error(error_read);
  if (child_error && !*child_error) return {};
  ::kill(pid, SIGKILL);  // only needed if reading the pipe itself failed
  reap_blocking(pid);
  if (!child_error) return tl::unexpected(child_error.error());
  const ChildError& rec = **child_error;
  auto step = static_cast<Step>(rec.step);
  StepName name = step_name(step, rec.index, spec);
  auto e = errno_error(name.call, name.object, rec.err);
  bool layer = step == Step::kCgroupJoin || name.step != nullptr;
  e.value().code = layer ? ErrorCode::kSandboxUnavailable : ErrorCode::kExecFailed;
  e.value().details["step"] = name.step != nullptr ? name.step : name.call;
  return e;
}

// The child's mount namespace, if it sent it before exec (it did, unless /proc/self failed).
NsHold receive_mount_ns(const posix::Fd& sock) {
  if (!sock) return {};
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int))) {
    return {};
  }
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return NsHold(posix::Fd(fd));
}

// With a new root the child exec'd kbfleet-init, which now starts the handler: its first status
// record says whether the handler's execve worked.
Status await_handler(pid_t pid, const posix::Fd& status_read, const LaunchSpec& spec) {
  init::StatusRecord rec{};
  ssize_t n;
  do {
    n = ::read(status_read.get(), &rec, sizeof rec);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof rec && rec.kind == init::StatusKind::kStarted) return {};
  ::kill(pid, SIGKILL);
  reap_blocking(pid);
  if (n == sizeof rec && rec.kind == init::StatusKind::kExecFailed) {
    auto e = errno_error("execve", spec.exec.string(), rec.value);
    e.value().code = ErrorCode::kExecFailed;
    e.value().details["step"] = "execve";
    return e;
  }
  return make_error(ErrorCode::kSandboxUnavailable, "kbfleet-init exited before starting the handler",
                    {{"step", "pidns"}});
}

}  // namespace

Result<Launched> launch(const LaunchSpec& spec) {
  if (auto st = validate(spec); !st) return tl::unexpected(st.error());
  auto channels = make_channels(spec);
  if (!channels) return tl::unexpected(channels.error());
  ExecArrays exec(spec);
  ChildPlan plan = make_plan(spec, exec, *channels);
  auto pid = clone_child(spec, plan);
  if (!pid) return tl::unexpected(pid.error());

  // Our copies of the child's ends must go, or the pipes never reach EOF.
  for (posix::Fd* fd : {&channels->stdin_src, &channels->out.write, &channels->err.write, &channels->fd3.write,
                        &channels->error.write, &channels->status.write, &channels->landlock, &channels->userns,
                        &channels->init, &channels->worker_pidfd, &channels->netns, &channels->root_template,
                        &channels->ns_send}) {
    fd->reset();
  }
  if (auto st = await_exec(*pid, channels->error.read, spec); !st) return tl::unexpected(st.error());
  NsHold mount_ns = receive_mount_ns(channels->ns_receive);
  if (channels->status.read) {
    if (auto st = await_handler(*pid, channels->status.read, spec); !st) return tl::unexpected(st.error());
    if (auto st = set_nonblocking(channels->status.read, "status pipe"); !st) {
      ::kill(*pid, SIGKILL);
      reap_blocking(*pid);
      return tl::unexpected(st.error());
    }
  }

  posix::Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0)));
  if (!pidfd) {
    int e = errno;
    ::kill(-*pid, SIGKILL);  // unreaped, so the group id is still the child's
    reap_blocking(*pid);
    return errno_error("pidfd_open", std::to_string(*pid), e);
  }
  return Launched{*pid,
                  std::move(pidfd),
                  std::move(channels->out.read),
                  std::move(channels->err.read),
                  std::move(channels->fd3.read),
                  std::move(channels->status.read),
                  std::move(mount_ns)};
}

}  // namespace kbfleet::worker
