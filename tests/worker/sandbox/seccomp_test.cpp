// The seccomp filter against the real kernel: each probe runs in a forked child that sets
// no_new_privs, loads the filter and makes one call; the parent asserts the outcome. Arguments
// are chosen so that a call the filter failed to stop fails harmlessly (bad pointers, missing
// paths) or only affects the throwaway child.
#include <linux/keyctl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/worker/sandbox/child_probe.hpp"
#include "worker/sandbox/capabilities.hpp"
#include "worker/sandbox/seccomp.hpp"

namespace kbfleet::worker {
namespace {

using testing::errno_of;
using testing::errno_outcome;
using testing::run_in_child;

const SeccompFilter& filter() {
  static const Result<SeccompFilter> built = SeccompFilter::build();
  if (!built) FAIL("SeccompFilter::build: " << built.error().to_string());
  return *built;
}

// Runs `probe` in a child under the filter.
template <typename F>
std::string filtered(F probe) {
  const sock_fprog* prog = filter().program();
  return run_in_child([&] {
    if (set_no_new_privs() < 0) return testing::kSetupNoNewPrivs;
    if (apply_seccomp(prog) < 0) return testing::kSetupSeccomp;
    return probe();
  });
}

// A fork-like syscall's result in the child: the new process (rc == 0, only if the filter let
// it through) leaves at once; the caller reaps it and reports success.
int reap_forked(long rc) {
  if (rc == 0) ::_exit(0);
  if (rc < 0) return errno;
  int status = 0;
  ::waitpid(static_cast<pid_t>(rc), &status, __WALL);
  return 0;
}

// The exit status of /bin/true run by posix_spawn or fork+execve: 0 = it ran.
int run_true_with_fork() {
  pid_t pid = ::fork();
  if (pid < 0) return errno;
  if (pid == 0) {
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execve("/bin/true", argv, environ);
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return errno;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_CASE("the seccomp filter compiles once into an in-memory BPF program", "[sandbox][seccomp]") {
  const SeccompFilter& f = filter();
  REQUIRE(f.program() != nullptr);
  CHECK(f.program()->len > 0);
  CHECK(f.program()->filter != nullptr);
  CHECK(SeccompFilter::denied().size() == 46);
#if defined(__x86_64__)
  CHECK(f.unknown().empty());  // libseccomp 2.5.4 knows every denied syscall on x86_64
#endif
}

TEST_CASE("every syscall on the deny list fails with EPERM under the filter", "[sandbox][seccomp]") {
  for (const std::string& name : SeccompFilter::denied()) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr < 0) continue;  // not on this architecture: listed by unknown()
    INFO("syscall " << name);
    // All arguments -1: invalid for every one of them, so a call that got through fails
    // harmlessly with EINVAL, EFAULT, EBADF, ... instead of EPERM.
    CHECK(filtered([nr] { return errno_of(::syscall(nr, -1L, -1L, -1L, -1L, -1L, -1L)); }) ==
          errno_outcome(EPERM));
  }
}

TEST_CASE("the usual escape syscalls fail with EPERM under the filter", "[sandbox][seccomp]") {
  CHECK(filtered([] { return errno_of(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)); }) == errno_outcome(EPERM));
  CHECK(filtered([] { return errno_of(::mount("none", "/nonexistent-kbfleet", "tmpfs", 0, nullptr)); }) ==
        errno_outcome(EPERM));
  CHECK(filtered([] { return errno_of(::unshare(CLONE_NEWUSER)); }) == errno_outcome(EPERM));
  CHECK(filtered([] { return errno_of(::unshare(CLONE_NEWNS)); }) == errno_outcome(EPERM));
  CHECK(filtered([] { return errno_of(::syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, nullptr)); }) ==
        errno_outcome(EPERM));
  CHECK(filtered([] {
          char attr[128] = {};
          return errno_of(::syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
        }) == errno_outcome(EPERM));
  // Without the filter the same calls fail otherwise or succeed: EPERM is the filter's.
  CHECK(run_in_child([] { return errno_of(::mount("none", "/nonexistent-kbfleet", "tmpfs", 0, nullptr)); }) ==
        errno_outcome(ENOENT));
}

TEST_CASE("clone with any CLONE_NEW* flag fails with EPERM, whatever the other bits",
          "[sandbox][seccomp]") {
  for (unsigned long flag : {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC,
                             CLONE_NEWUTS, CLONE_NEWCGROUP}) {
    INFO("flag 0x" << std::hex << flag);
    CHECK(filtered([flag] { return reap_forked(::syscall(SYS_clone, flag | SIGCHLD, 0, 0, 0, 0)); }) ==
          errno_outcome(EPERM));
    CHECK(filtered([flag] {
            return reap_forked(::syscall(SYS_clone, (1UL << 40) | flag | CLONE_NEWIPC | SIGCHLD, 0, 0, 0, 0));
          }) == errno_outcome(EPERM));
  }
  CHECK(filtered([] { return reap_forked(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)); }) == "ok");
}

TEST_CASE("clone3 fails with ENOSYS so that glibc falls back to clone", "[sandbox][seccomp]") {
  CHECK(filtered([] {
          clone_args args{};
          args.exit_signal = SIGCHLD;
          return reap_forked(::syscall(SYS_clone3, &args, sizeof args));
        }) == errno_outcome(ENOSYS));
  // glibc 2.34+ creates threads and posix_spawn children with clone3 first.
  CHECK(filtered([] {
          pthread_t t;
          int rc = ::pthread_create(&t, nullptr, [](void*) -> void* { return nullptr; }, nullptr);
          if (rc != 0) return rc;
          return ::pthread_join(t, nullptr);
        }) == "ok");
  CHECK(filtered([] {
          pid_t pid = 0;
          char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
          int rc = ::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ);
          if (rc != 0) return rc;
          int status = 0;
          ::waitpid(pid, &status, 0);
          return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }) == "ok");
}

TEST_CASE("fork and execve still work under the filter", "[sandbox][seccomp]") {
  CHECK(filtered(run_true_with_fork) == "ok");
  CHECK(filtered([] {
          char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
          ::execve("/bin/true", argv, environ);
          return errno;
        }) == "ok");
}

TEST_CASE("the terminal injection ioctls fail with EPERM whatever their high bits", "[sandbox][seccomp]") {
  // fd -1: the filter answers before the kernel looks at the fd; unfiltered, this is EBADF.
  char c = 'x';
  CHECK(filtered([&] { return errno_of(::ioctl(-1, TIOCSTI, &c)); }) == errno_outcome(EPERM));
  CHECK(filtered([&] { return errno_of(::ioctl(-1, TIOCLINUX, &c)); }) == errno_outcome(EPERM));
  CHECK(filtered([&] { return errno_of(::syscall(SYS_ioctl, -1, (1UL << 32) | TIOCSTI, &c)); }) ==
        errno_outcome(EPERM));
  CHECK(filtered([&] { return errno_of(::ioctl(-1, TCGETS, &c)); }) == errno_outcome(EBADF));
}

TEST_CASE("personality accepts only PER_LINUX and the query", "[sandbox][seccomp]") {
  CHECK(filtered([] { return errno_of(::personality(0xffffffff)); }) == "ok");
  CHECK(filtered([] { return errno_of(::personality(PER_LINUX)); }) == "ok");
  CHECK(filtered([] { return errno_of(::personality(ADDR_NO_RANDOMIZE)); }) == errno_outcome(EPERM));
  CHECK(filtered([] { return errno_of(::personality(READ_IMPLIES_EXEC)); }) == errno_outcome(EPERM));
  CHECK(filtered([] { return errno_of(::personality(PER_LINUX32)); }) == errno_outcome(EPERM));
  // The kernel reads an unsigned int: high bits change nothing, in either direction.
  CHECK(filtered([] { return errno_of(::syscall(SYS_personality, ~0UL)); }) == "ok");
  CHECK(filtered([] { return errno_of(::syscall(SYS_personality, 1UL << 32)); }) == "ok");
  CHECK(filtered([] { return errno_of(::syscall(SYS_personality, (1UL << 32) | ADDR_NO_RANDOMIZE)); }) ==
        errno_outcome(EPERM));
}

#if defined(__x86_64__)
// getpid through the i386 entry (int 0x80; __NR_getpid is 20 there).
long int80_getpid() {
  long ret = 20;
  asm volatile("int $0x80" : "+a"(ret) : : "r8", "r9", "r10", "r11", "memory");
  return ret;
}

TEST_CASE("an x32 syscall kills the process", "[sandbox][seccomp]") {
  constexpr long kX32Bit = 0x40000000;  // __X32_SYSCALL_BIT
  CHECK(filtered([] { return errno_of(::syscall(kX32Bit | SYS_getpid)); }) == "signal SYS");
}

TEST_CASE("an i386 syscall through int 0x80 kills the process", "[sandbox][seccomp]") {
  std::string unfiltered = run_in_child([] { return int80_getpid() == ::getpid() ? 0 : 1; });
  SKIP_UNLESS(unfiltered == "ok", "no i386 emulation on this kernel (int 0x80 gave " << unfiltered << ")");
  CHECK(filtered([] { return int80_getpid() == ::getpid() ? 0 : 1; }) == "signal SYS");
}
#endif

}  // namespace
}  // namespace kbfleet::worker
