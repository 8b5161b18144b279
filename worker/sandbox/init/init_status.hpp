#pragma once
// The records kbfleet-init (pid 1 of a task's pid namespace) writes to the worker on its status
// pipe (fd kStatusFd). Pid 1 cannot die of the handler's signal and its own exit code cannot
// carry "killed by SIGKILL" apart from "exit 137", so the handler's real wait status travels here.
#include <cstdint>

namespace kbfleet::worker::init {

inline constexpr int kStatusFd = 4;  // init's end of the status pipe (handler fds are 0-3)

enum class StatusKind : std::int32_t {
  kStarted = 1,     // the handler exec'd; value = 0
  kExecFailed = 2,  // the handler's execve failed; value = errno. Init then exits 127
  kExited = 3,      // the handler ended; value = its wait status (waitpid)
};

struct StatusRecord {
  StatusKind kind;
  std::int32_t value;
};

}  // namespace kbfleet::worker::init
