#pragma once
// launch(): starts one handler as a child process and returns once it has exec'd (or failed
// to). The one function a later clone()-based sandbox launcher replaces; HandlerProcess only
// supervises what it returns.
//
// The child, before execve: own process group; stdin = sealed memfd with the input (or
// /dev/null), stdout/stderr/fd 3 = pipes, every other fd closed; default signal mask and
// dispositions; RLIMIT_CORE 0, RLIMIT_NOFILE, RLIMIT_CPU, RLIMIT_AS from the limits (RLIMIT_AS
// only without cgroups to join); its pid written to each of spec.join_cgroups; a fresh network
// namespace for NetMode::kNone; cwd = workspace; SIGKILL when the worker dies.
#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"
#include "worker/executor/ns_hold.hpp"
#include "worker/executor/process.hpp"

namespace kbfleet::worker {

struct Launched {
  int pid = -1;  // also the process group id
  posix::Fd pidfd;
  posix::Fd stdout_read;  // the pipes' read ends, O_NONBLOCK | O_CLOEXEC
  posix::Fd stderr_read;
  posix::Fd fd3_read;
  // With a new root: kbfleet-init's status pipe (O_NONBLOCK), carrying the handler's real wait
  // status (init/init_status.hpp). Empty for a plain process.
  posix::Fd status_read;
  // With a new root: the task's mount namespace, torn down off the task's path once dropped.
  NsHold mount_ns;
};

// Returns: the running child. Errors: EXEC_FAILED (details: errno, step) when a setup step or
// execve failed in the child, which is then already reaped; SANDBOX_UNAVAILABLE (details: errno,
// step "cgroup") when joining a cgroup failed there; INVALID_ARGUMENT for a relative exec or
// cgroup.procs path or a NUL byte in an argument or env entry; IO_ERROR when a pipe, memfd, fork
// or pidfd_open failed in the worker. Blocks only until the child has exec'd.
[[nodiscard]] Result<Launched> launch(const LaunchSpec& spec);

}  // namespace kbfleet::worker
