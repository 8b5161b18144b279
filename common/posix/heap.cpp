#include "common/posix/heap.hpp"

#include <malloc.h>

namespace kbfleet::posix {

bool keep_freed_heap() {
  // Setting either disables glibc's dynamic thresholds, which is the point: they follow the last
  // freed mmap block and trimmed the heap between two chunks.
  const bool mmap_ok = ::mallopt(M_MMAP_THRESHOLD, static_cast<int>(kHeapMmapThresholdBytes)) == 1;
  const bool trim_ok = ::mallopt(M_TRIM_THRESHOLD, static_cast<int>(kHeapTrimThresholdBytes)) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace kbfleet::posix
