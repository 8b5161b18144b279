// Exhausting the host: processes, memory, CPU time and disk. Each attack gives up at a cap far
// above the quota the test sets and reports ESCAPED there. Contained or not, they exit 1, so the
// task fails and the worker has to name the limit (PIDS_LIMIT, MEMORY_LIMIT, CPU_LIMIT, DISK_LIMIT).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

namespace kbfleet::attack {
namespace {

[[noreturn]] void give_up(const std::string& verdict) { verdict_exit(verdict, 1); }

}  // namespace

// Children block forever; the task's end has to kill them.
void fork_bomb(const Input&) {
  constexpr int kCap = 1024;
  for (int n = 1; n <= kCap; ++n) {
    pid_t pid = fork();
    if (pid < 0) give_up("CONTAINED: " + errno_text("fork #" + std::to_string(n)));
    if (pid == 0) {
      for (;;) pause();
    }
  }
  give_up("ESCAPED: " + std::to_string(kCap) + " processes forked");
}

// Touches every page, 8 MiB at a time, up to 1 GiB.
void memory_hog(const Input&) {
  constexpr std::size_t kChunk = 8u << 20, kCap = 1u << 30;
  for (std::size_t total = 0; total < kCap; total += kChunk) {
    void* p = mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) give_up("CONTAINED: " + errno_text("mmap after " + std::to_string(total >> 20) + " MiB"));
    std::memset(p, 0x5a, kChunk);
  }
  give_up("ESCAPED: touched 1024 MiB");
}

// Burns CPU until 8 s of CPU time.
void cpu_spin(const Input&) {
  timespec t{};
  volatile unsigned long sink = 0;
  do {
    for (int i = 0; i < 1000000; ++i) sink = sink + static_cast<unsigned long>(i);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  } while (t.tv_sec < 8);
  give_up("ESCAPED: used 8 s of CPU time");
}

// Spreads the spinning over 4 children, each staying under a per-process CPU limit of cpuMs
// (RLIMIT_CPU counts one process), and reports ESCAPED once they used 3 s of CPU together.
void cpu_spin_forked(const Input&) {
  constexpr int kChildren = 4;
  for (int i = 0; i < kChildren; ++i) {
    pid_t pid = fork();
    if (pid < 0) give_up("CONTAINED: " + errno_text("fork"));
    if (pid == 0) {
      timespec t{};
      volatile unsigned long sink = 0;
      do {
        for (int n = 0; n < 1000000; ++n) sink = sink + static_cast<unsigned long>(n);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
      } while (t.tv_sec * 1000 + t.tv_nsec / 1000000 < 900);  // under any per-process cap >= 1 s
      _exit(0);
    }
  }
  for (int i = 0; i < kChildren; ++i) {
    int status = 0;
    while (wait(&status) < 0 && errno == EINTR) {
    }
  }
  rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  long ms = ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000 + ru.ru_stime.tv_sec * 1000 + ru.ru_stime.tv_usec / 1000;
  give_up("ESCAPED: the children used " + std::to_string(ms) + " ms of CPU together");
}

// Writes out/fill.bin in 1 MiB blocks up to `mib` (input; default 1024).
void fill_disk(const Input& in) {
  long cap = std::atol(in.get("mib").c_str());
  if (cap <= 0) cap = 1024;
  int fd = open("out/fill.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) give_up("CONTAINED: " + errno_text("open(out/fill.bin)"));
  static char block[1 << 20];
  std::memset(block, 'f', sizeof block);
  for (long mib = 0; mib < cap; ++mib) {
    std::size_t done = 0;
    while (done < sizeof block) {
      ssize_t n = write(fd, block + done, sizeof block - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) give_up("CONTAINED: " + errno_text("write after " + std::to_string(mib) + " MiB"));
      done += static_cast<std::size_t>(n);
    }
  }
  if (fsync(fd) != 0) give_up("CONTAINED: " + errno_text("fsync"));
  give_up("ESCAPED: wrote " + std::to_string(cap) + " MiB into the workspace");
}

}  // namespace kbfleet::attack
