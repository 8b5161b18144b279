#pragma once
// Signals as file descriptors: the daemons' poll loops stop when SIGTERM/SIGINT arrive, and the
// CLI turns Ctrl-C into a cancel, without async signal handlers.
#include <initializer_list>

#include "common/posix/fd.hpp"

namespace kbfleet::posix {

// Blocks `signals` in this thread (children inherit a default mask from the executor) and
// returns a non-blocking CLOEXEC signalfd that becomes readable when one arrives. Also ignores
// SIGPIPE, so a peer closing a pipe is an EPIPE error, not a death.
[[nodiscard]] Result<Fd> signal_fd(std::initializer_list<int> signals);
// Reads every pending signal off a non-blocking signalfd (so it stops being readable).
void drain_signal_fd(int fd);

}  // namespace kbfleet::posix
