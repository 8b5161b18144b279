// kbfleet-init's process entry and the few pieces a C library would otherwise provide
// (raw_syscall.hpp says why there is none): _start, the clone trampoline, the signal-return
// trampoline, and memset/memcpy, which the compiler may emit calls to even in freestanding code.
#include <stddef.h>

#include "worker/sandbox/init/raw_syscall.hpp"

extern "C" int kbfleet_init_main(int argc, char** argv, char** envp);

// The kernel starts a static binary at _start with the stack holding argc, argv[], nullptr,
// envp[], nullptr, auxv. `sp` points at argc.
extern "C" [[noreturn]] __attribute__((used)) void kbfleet_init_start(long* sp) {
  int argc = static_cast<int>(sp[0]);
  char** argv = reinterpret_cast<char**>(sp + 1);
  char** envp = argv + argc + 1;
  kbfleet::worker::init::sys::exit_group(kbfleet_init_main(argc, argv, envp));
}

#if defined(__x86_64__)
// _start: clear the frame pointer (end of the call chain), pass the initial sp, align the stack
// as a call expects. kbfleet_init_clone(fn=rdi, stack=rsi, flags=rdx, arg=rcx): fn and arg are
// stored on the child's stack, which the child pops after the syscall. rt_sigreturn for
// SA_RESTORER.
asm(R"(
  .text
  .globl _start
  .type _start, @function
_start:
  xor %ebp, %ebp
  mov %rsp, %rdi
  and $-16, %rsp
  call kbfleet_init_start
  hlt

  .globl kbfleet_init_clone
  .type kbfleet_init_clone, @function
kbfleet_init_clone:
  and $-16, %rsi
  sub $16, %rsi
  mov %rdi, 0(%rsi)
  mov %rcx, 8(%rsi)
  mov %rdx, %rdi
  xor %edx, %edx
  xor %r10d, %r10d
  xor %r8d, %r8d
  mov $56, %eax
  syscall
  test %rax, %rax
  jnz 1f
  xor %ebp, %ebp
  pop %rax
  pop %rdi
  call *%rax
  mov %eax, %edi
  mov $60, %eax
  syscall
  hlt
1:
  ret

  .globl kbfleet_init_restore_rt
  .type kbfleet_init_restore_rt, @function
kbfleet_init_restore_rt:
  mov $15, %eax
  syscall
  hlt
)");
#else
// Only the x86-64 entry has been built and tested (tests/worker/sandbox/init_test.cpp); another
// architecture needs its own _start, clone and restorer trampolines, written and tested there.
#error "kbfleet-init's entry (_start, clone trampoline) exists for x86-64 only"
#endif

// Byte loops; -fno-tree-loop-distribute-patterns (CMakeLists.txt) keeps the compiler from
// turning them back into calls to themselves.
extern "C" __attribute__((used)) void* memset(void* dst, int c, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  for (size_t i = 0; i < n; ++i) d[i] = static_cast<unsigned char>(c);
  return dst;
}

extern "C" __attribute__((used)) void* memcpy(void* dst, const void* src, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < n; ++i) d[i] = s[i];
  return dst;
}
