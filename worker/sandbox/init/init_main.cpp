// kbfleet-init: pid 1 of a task's pid namespace. The launcher has already applied every sandbox
// layer; init only runs the handler as its child and stays out of the way:
//  - forwards the signals the worker sends (SIGTERM on timeout or cancel, ...) to the handler. A
//    pid-namespace init with default dispositions would silently drop them, which is why the
//    handler is not pid 1 itself;
//  - reaps whatever gets reparented to it, so the namespace fills with no zombies;
//  - exits as soon as the handler does: the kernel then SIGKILLs every process left in the
//    namespace, double-forked and setsid'd ones included;
//  - reports the handler's start and real wait status on the status pipe (init_status.hpp).
// Usage (by the launcher only): kbfleet-init <handler> [args...], environment = the handler's.
// Statically linked without a C library (raw_syscall.hpp: a libc's start-up costs more than
// all of init's work under a hypervisor) and allocation-free, so it runs inside any minimal root.
#include <asm/signal.h>
#include <linux/sched.h>
#include <linux/wait.h>

#include "worker/sandbox/init/init_status.hpp"
#include "worker/sandbox/init/raw_syscall.hpp"

namespace {

namespace sys = kbfleet::worker::init::sys;
using kbfleet::worker::init::kStatusFd;
using kbfleet::worker::init::StatusKind;
using kbfleet::worker::init::StatusRecord;

constexpr long kEintr = -4;
constexpr int kNsig = 64;  // the kernel's _NSIG on x86-64 and arm64
constexpr int kFdCloexec = 1;  // FD_CLOEXEC
constexpr int kFSetfd = 2;     // F_SETFD

void report(StatusKind kind, int value) {
  StatusRecord rec{kind, value};
  while (sys::write(kStatusFd, &rec, sizeof rec) == kEintr) {
  }
}

void ignore_signal(int) {}

// Exit code mirroring the handler's, for a reader that does not look at the status pipe
// (<sys/wait.h>'s macros, spelled out: there is no libc header here).
int exit_code_of(int status) {
  int sig = status & 0x7f;
  if (sig == 0) return (status >> 8) & 0xff;            // WIFEXITED: WEXITSTATUS
  if (sig != 0x7f) return 128 + sig;                    // WIFSIGNALED: 128 + WTERMSIG
  return 125;
}

// What the handler's child side needs. It runs on its own stack in init's memory (CLONE_VM), so
// it writes its execve errno straight into `exec_errno`, which init reads once the kernel has
// let it go on (CLONE_VFORK: after the child's execve or _exit).
struct Start {
  char** argv;
  char** envp;
  int exec_errno;
};

// The handler's side, between clone and execve: an empty mask, then the handler. No reset of
// dispositions: every one is init's no-op handler, which execve turns back into SIG_DFL (none
// is SIG_IGN, which would survive it). The worker signals the process group, so a signal that
// lands in the instant between the unblock and execve (and runs the no-op here) is pending for
// init as well, which forwards it once the handler has started. Syscalls only.
int run_handler(void* arg) {
  auto* start = static_cast<Start*>(arg);
  sys::close(kStatusFd);  // O_CLOEXEC too; closed first so no error path leaves it to the handler
  const unsigned long none = 0;
  sys::sigprocmask(SIG_SETMASK, &none);
  long rc = sys::execve(start->argv[0], start->argv, start->envp);
  *const_cast<volatile int*>(&start->exec_errno) = static_cast<int>(-rc);
  return 127;
}

// The handler's stack until it execs. Static: init starts one handler, once.
alignas(16) char handler_stack[64 * 1024];

// Starts the handler as our child. CLONE_VM | CLONE_VFORK, as posix_spawn does: no copy of our
// page tables for a child that execs at once, no pipe to learn whether the exec worked, and we
// resume only after it did (or failed). Returns its pid, or -errno (clone failed); a failed
// execve sets *exec_errno (the child has then exited 127, and dies with init).
long start_handler(char** argv, char** envp, int* exec_errno) {
  Start start{argv, envp, 0};
  long pid = kbfleet_init_clone(run_handler, handler_stack + sizeof handler_stack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                                &start);
  *exec_errno = pid < 0 ? 0 : *const_cast<volatile int*>(&start.exec_errno);
  return pid;
}

// Every disposition a no-op handler, so that no signal counts as ignored by a namespace init
// before it reaches sigwait (SIGKILL and SIGSTOP cannot be caught).
void catch_all_signals() {
  sys::KernelSigaction noop{};
  noop.handler = ignore_signal;
#if defined(__x86_64__)
  noop.flags = sys::kSaRestorer;  // x86-64 delivers a signal only with a return trampoline
  noop.restorer = kbfleet_init_restore_rt;
#endif
  for (int sig = 1; sig <= kNsig; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sys::sigaction(sig, &noop);
  }
}

}  // namespace

extern "C" int kbfleet_init_main(int argc, char** argv, char** envp) {
  if (argc < 2 || sys::fcntl(kStatusFd, kFSetfd, kFdCloexec) < 0) return 125;

  // Everything blocked and collected with sigwait.
  const unsigned long all = sys::kAllSignals;
  sys::sigprocmask(SIG_SETMASK, &all);
  catch_all_signals();

  int exec_errno = 0;
  long handler = start_handler(argv + 1, envp, &exec_errno);
  if (handler < 0) {
    report(StatusKind::kExecFailed, static_cast<int>(-handler));
    return 127;
  }
  if (exec_errno != 0) {
    report(StatusKind::kExecFailed, exec_errno);
    return 127;
  }
  report(StatusKind::kStarted, 0);

  for (;;) {
    long sig = sys::sigwait(&all);
    if (sig < 0) continue;  // EINTR
    if (sig != SIGCHLD) {
      sys::kill(static_cast<int>(handler), static_cast<int>(sig));
      continue;
    }
    int status = 0;
    long got;
    while ((got = sys::wait4(-1, &status, WNOHANG)) > 0) {
      if (got == handler) {
        report(StatusKind::kExited, status);
        return exit_code_of(status);
      }
    }
  }
}
