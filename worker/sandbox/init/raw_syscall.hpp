#pragma once
// The system calls kbfleet-init makes, without a C library. Init is linked with -nostdlib
// (CMakeLists.txt): a static glibc runs its CPU-feature detection at every start, a few dozen
// CPUID instructions, and under a hypervisor each CPUID traps to it (~45 us each on the
// benchmark VM), ~450 us per exec, once per task for init on top of the handler's own start
// (docs/performance.md#sandbox-spawn). Each call returns the kernel's result: >= 0, or -errno.
//
// Only x86-64 and arm64 are spelled out; another architecture fails to compile here.
#include <asm/unistd.h>

namespace kbfleet::worker::init::sys {

#if defined(__x86_64__)
inline long call(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
  long ret;
  register long r10 asm("r10") = d;
  asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
inline long call(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
  register long x8 asm("x8") = nr;
  register long x0 asm("x0") = a;
  register long x1 asm("x1") = b;
  register long x2 asm("x2") = c;
  register long x3 asm("x3") = d;
  asm volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
  return x0;
}
#else
#error "kbfleet-init: add this architecture's system call entry to raw_syscall.hpp and entry.cpp"
#endif

// The kernel's own struct sigaction for rt_sigaction (not glibc's), the same on x86-64 and
// arm64; the mask is the kernel's 64-bit sigset.
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  unsigned long mask;
};
constexpr long kSigsetSize = sizeof(unsigned long);
constexpr unsigned long kSaRestorer = 0x04000000;  // SA_RESTORER
constexpr unsigned long kAllSignals = ~0UL;

inline long write(int fd, const void* buf, unsigned long n) {
  return call(__NR_write, fd, reinterpret_cast<long>(buf), static_cast<long>(n));
}
inline long close(int fd) { return call(__NR_close, fd); }
inline long fcntl(int fd, int cmd, long arg) { return call(__NR_fcntl, fd, cmd, arg); }
inline long sigprocmask(int how, const unsigned long* set) {
  return call(__NR_rt_sigprocmask, how, reinterpret_cast<long>(set), 0, kSigsetSize);
}
inline long sigaction(int sig, const KernelSigaction* act) {
  return call(__NR_rt_sigaction, sig, reinterpret_cast<long>(act), 0, kSigsetSize);
}
// Waits for one of `set` (blocked); returns its number. No siginfo and no timeout.
inline long sigwait(const unsigned long* set) {
  return call(__NR_rt_sigtimedwait, reinterpret_cast<long>(set), 0, 0, kSigsetSize);
}
inline long kill(int pid, int sig) { return call(__NR_kill, pid, sig); }
inline long wait4(int pid, int* status, int options) {
  return call(__NR_wait4, pid, reinterpret_cast<long>(status), options, 0);
}
inline long execve(const char* path, char* const* argv, char* const* envp) {
  return call(__NR_execve, reinterpret_cast<long>(path), reinterpret_cast<long>(argv), reinterpret_cast<long>(envp));
}
[[noreturn]] inline void exit_group(int code) {
  for (;;) call(__NR_exit_group, code);
}

}  // namespace kbfleet::worker::init::sys

// In entry.cpp (assembly): clone(flags) with the child running fn(arg) on `stack_top` and exiting
// with its result; returns the child's pid or -errno in the parent. The signal-return trampoline
// SA_RESTORER needs on x86-64.
extern "C" long kbfleet_init_clone(int (*fn)(void*), void* stack_top, unsigned long flags, void* arg);
extern "C" void kbfleet_init_restore_rt();
