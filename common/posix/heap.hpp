#pragma once
// Process-wide malloc policy for the processes that move artifacts (broker, worker, CLI). Every
// artifact chunk is a 1-4 MiB ZeroMQ message that libzmq allocates on receipt and frees once
// written. glibc's defaults hand such blocks back to the kernel (an mmap per block, or a trim of
// the heap's top beyond 2x the last one), so each chunk's pages were faulted in and zeroed anew:
// ~90,000 page faults per GiB in the broker's and the worker's busiest threads, several us each on
// a VM whose balloon returns freed memory to the host (measured on the VM of issue #6).
#include <cstddef>

namespace kbfleet::posix {

// Blocks up to this size come from the heap, never from their own mmap.
inline constexpr std::size_t kHeapMmapThresholdBytes = std::size_t{16} << 20;
// Free memory at the top of a heap is returned to the kernel only beyond this; what is kept is
// bounded by what was in use at once (the transfer windows: a few times 8 MiB).
inline constexpr std::size_t kHeapTrimThresholdBytes = std::size_t{64} << 20;

// Applies both with mallopt(3); call once at the start of main, before any thread exists. Returns
// false if glibc refused either (the defaults then stay: slower, not wrong).
bool keep_freed_heap();

}  // namespace kbfleet::posix
