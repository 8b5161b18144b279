// keep_freed_heap: after it, allocating, touching and freeing a window of 1 MiB blocks again and
// again faults no new pages in (glibc's defaults fault most of each round in anew: an mmap per
// block, or a trim of the heap). Each test case runs in a process of its own (catch_discover_tests).
#include "common/posix/heap.hpp"

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

namespace {

long minor_faults() {
  rusage ru{};
  REQUIRE(::getrusage(RUSAGE_SELF, &ru) == 0);
  return ru.ru_minflt;
}

// Faults taken by `rounds` rounds of: allocate 8 blocks of 1 MiB, write them, free them all.
long faults_of_rounds(int rounds) {
  constexpr std::size_t kBlock = std::size_t{1} << 20;
  const long before = minor_faults();
  for (int r = 0; r < rounds; ++r) {
    std::vector<char*> blocks;
    for (int i = 0; i < 8; ++i) {
      auto* p = static_cast<char*>(std::malloc(kBlock));
      REQUIRE(static_cast<void*>(p) != nullptr);
      std::memset(p, r + i, kBlock);
      blocks.push_back(p);
    }
    for (char* p : blocks) std::free(p);
  }
  return minor_faults() - before;
}

}  // namespace

TEST_CASE("keep_freed_heap reuses freed 1 MiB blocks without faulting their pages in again") {
  REQUIRE(kbfleet::posix::keep_freed_heap());
  (void)faults_of_rounds(1);  // the first round faults the heap in
  // 20 rounds x 8 MiB would be ~40,000 faults if the pages were handed back each time.
  CHECK(faults_of_rounds(20) < 500);
}

TEST_CASE("without keep_freed_heap the same rounds fault pages in again (the test above is not vacuous)") {
  (void)faults_of_rounds(1);
  CHECK(faults_of_rounds(20) > 5000);
}
