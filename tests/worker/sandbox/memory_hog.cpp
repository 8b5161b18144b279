// memory_hog [MiB]: allocates MiB mebibytes (default 200) one at a time and writes to every page,
// so the memory is really charged, then prints "touched N MiB" and exits 0. Exits 3 if malloc
// fails (RLIMIT_AS). Under a smaller cgroup memory limit the kernel's OOM killer ends it first.
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  long mib = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 200;
  constexpr std::size_t kMiB = 1 << 20;
  constexpr std::size_t kPage = 4096;
  std::vector<char*> kept;
  for (long i = 0; i < mib; ++i) {
    char* block = static_cast<char*>(std::malloc(kMiB));
    if (block == nullptr) {
      std::puts("malloc failed");
      return 3;
    }
    // volatile: the writes must happen even though nothing reads them.
    for (std::size_t off = 0; off < kMiB; off += kPage) static_cast<volatile char*>(block)[off] = 1;
    kept.push_back(block);
  }
  std::printf("touched %ld MiB\n", mib);
  return 0;
}
