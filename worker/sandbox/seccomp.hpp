#pragma once
// The seccomp layer: a deny list of the syscalls a task never needs and that widen the kernel
// surface it can attack or let it leave its other layers (issue #4). It complements, not
// replaces, namespaces, Landlock and the capability drop: default is ALLOW.
//
// Guarantees once apply_seccomp() returned 0 (tests/worker/sandbox/seccomp_test.cpp):
//  - a syscall of another ABI (i386 through int 0x80, x32) kills the whole process (SIGSYS), so
//    the deny list cannot be bypassed by a different syscall table;
//  - each syscall of denied() fails with EPERM (those libseccomp does not know on this
//    architecture are skipped: unknown() lists them);
//  - personality() only accepts PER_LINUX (0) and the query 0xffffffff (no ADDR_NO_RANDOMIZE,
//    READ_IMPLIES_EXEC, ...), else EPERM; like the kernel it looks at the low 32 bits only;
//  - ioctl(TIOCSTI) and ioctl(TIOCLINUX) fail with EPERM (the command is compared on its low 32
//    bits, as the kernel reads it, so setting high bits does not bypass the rule);
//  - clone() with any CLONE_NEW* flag fails with EPERM; clone3() fails with ENOSYS, since its
//    flags sit behind a pointer seccomp cannot read, and glibc then falls back to clone();
//  - plain fork/clone, execve and everything else keep working.
//
// Split: SeccompFilter::build() runs once at worker start (libseccomp allocates); the launched
// child passes program() to apply_seccomp() between clone and execve (one raw syscall).
#include <linux/filter.h>

#include <string>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::worker {

class SeccompFilter {
 public:
  // Compiles the filter for the native architecture (x86_64 here) into a BPF program held in
  // memory. Errors: SANDBOX_UNAVAILABLE (details layer=seccomp) naming the libseccomp call that
  // failed, e.g. a kernel without SECCOMP_RET_KILL_PROCESS (< 4.14).
  [[nodiscard]] static Result<SeccompFilter> build();

  // The program to pass to apply_seccomp(). Points into this object: valid while it lives and is
  // not moved from. Read-only, so one filter may serve concurrent launches.
  const sock_fprog* program() const { return &prog_; }

  // The syscalls denied with EPERM (besides personality/ioctl/clone by argument and clone3), in
  // a fixed order: for docs and --check-sandbox.
  static const std::vector<std::string>& denied();
  // Those of denied() libseccomp cannot resolve on this architecture, hence not in the filter.
  const std::vector<std::string>& unknown() const { return unknown_; }

  SeccompFilter(SeccompFilter&& o) noexcept;
  SeccompFilter& operator=(SeccompFilter&& o) noexcept;
  SeccompFilter(const SeccompFilter&) = delete;
  SeccompFilter& operator=(const SeccompFilter&) = delete;
  ~SeccompFilter() = default;

 private:
  SeccompFilter(std::vector<sock_filter> code, std::vector<std::string> unknown);

  std::vector<sock_filter> code_;
  sock_fprog prog_{};
  std::vector<std::string> unknown_;
};

// Child side: seccomp(SECCOMP_SET_MODE_FILTER, 0, prog). The caller must have set no_new_privs
// (set_no_new_privs() in capabilities.hpp): without it the kernel demands CAP_SYS_ADMIN and,
// after the capability drop, returns EACCES. Apply it last before execve: the filter also
// binds the launcher's remaining steps. Returns 0, or -1 with errno. Async-signal-safe.
int apply_seccomp(const sock_fprog* prog) noexcept;

}  // namespace kbfleet::worker
