#include "common/posix/signals.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>

namespace kbfleet::posix {

Result<Fd> signal_fd(std::initializer_list<int> signals) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : signals) sigaddset(&mask, s);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return errno_error("sigprocmask", "SIG_BLOCK", errno);
  ::signal(SIGPIPE, SIG_IGN);
  int fd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return errno_error("signalfd", "", errno);
  return Fd(fd);
}

void drain_signal_fd(int fd) {
  signalfd_siginfo info;
  for (;;) {
    ssize_t n = ::read(fd, &info, sizeof info);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof info)) return;  // EAGAIN: drained
  }
}

}  // namespace kbfleet::posix
