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
// Statically linked and allocation-free, so it runs inside any minimal root.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "worker/sandbox/init/init_status.hpp"

namespace {

using kbfleet::worker::init::kStatusFd;
using kbfleet::worker::init::StatusKind;
using kbfleet::worker::init::StatusRecord;

void report(StatusKind kind, int value) {
  StatusRecord rec{kind, value};
  while (::write(kStatusFd, &rec, sizeof rec) < 0 && errno == EINTR) {
  }
}

void ignore_signal(int) {}

// Exit code mirroring the handler's, for a reader that does not look at the status pipe.
int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
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
  ::close(kStatusFd);  // O_CLOEXEC too; closed first so no error path leaves it to the handler
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(start->argv[0], start->argv, start->envp);
  start->exec_errno = errno;
  ::_exit(127);
}

// The handler's stack until it execs. Static: init starts one handler, once.
alignas(16) char handler_stack[64 * 1024];

// Starts the handler as our child. CLONE_VM | CLONE_VFORK, as posix_spawn does: no copy of our
// page tables for a child that execs at once, no pipe to learn whether the exec worked, and we
// resume only after it did (or failed). Returns its pid, or -1 with errno (clone failed); a
// failed execve sets *exec_errno (the child has then exited 127, and dies with init).
pid_t start_handler(char** argv, char** envp, int* exec_errno) {
  Start start{argv, envp, 0};
  pid_t pid = ::clone(run_handler, handler_stack + sizeof handler_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
  *exec_errno = pid < 0 ? 0 : start.exec_errno;
  return pid;
}

}  // namespace

int main(int argc, char** argv, char** envp) {
  if (argc < 2 || ::fcntl(kStatusFd, F_SETFD, FD_CLOEXEC) < 0) return 125;

  // Everything blocked and collected with sigwaitinfo; the no-op handlers make sure that no
  // signal counts as ignored by a namespace init before it reaches us.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  struct sigaction noop {};
  noop.sa_handler = ignore_signal;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &noop, nullptr);
  }

  int exec_errno = 0;
  pid_t handler = start_handler(argv + 1, envp, &exec_errno);
  if (handler < 0) {
    report(StatusKind::kExecFailed, errno);
    return 127;
  }
  if (exec_errno != 0) {
    report(StatusKind::kExecFailed, exec_errno);
    return 127;
  }
  report(StatusKind::kStarted, 0);

  for (;;) {
    siginfo_t info{};
    int sig = ::sigwaitinfo(&all, &info);
    if (sig < 0) continue;  // EINTR
    if (sig != SIGCHLD) {
      ::kill(handler, sig);
      continue;
    }
    int status = 0;
    pid_t got;
    while ((got = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (got == handler) {
        report(StatusKind::kExited, status);
        return exit_code_of(status);
      }
    }
  }
}
