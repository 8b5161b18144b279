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

[[noreturn]] void run_handler(char** argv, char** envp, int error_write) {
  ::close(kStatusFd);
  sigset_t none;
  sigemptyset(&none);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(argv[0], argv, envp);
  int err = errno;
  while (::write(error_write, &err, sizeof err) < 0 && errno == EINTR) {
  }
  ::_exit(127);
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

  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) < 0) return 125;
  pid_t handler = ::fork();
  if (handler < 0) {
    report(StatusKind::kExecFailed, errno);
    return 127;
  }
  if (handler == 0) run_handler(argv + 1, envp, error_pipe[1]);
  ::close(error_pipe[1]);
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(error_pipe[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
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
