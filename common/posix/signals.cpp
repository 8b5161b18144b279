#include "common/posix/signals.hpp"

#include <signal.h>
#include <sys/signalfd.h>

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

}  // namespace kbfleet::posix
