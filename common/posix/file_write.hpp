#pragma once
// Writing large buffers into files in slices of at most kWriteSliceBytes, as cp does (it copies
// in 128 KiB steps or through a 64 KiB pipe). A single write(2) of 1 MiB makes the page cache
// allocate folios of up to 1 MiB (large folios, ext4 since Linux 6.16). On a VM whose balloon
// reports free memory to the host (virtio-balloon free page reporting: Firecracker, most clouds),
// such high-order blocks are the ones handed back to the host, so every first touch of them
// faults on the host, while small folios can still reuse memory freed recently and not reported
// yet. Measured on the 2-core VM of issue #6: 1 GiB written with dd 1 MiB at a time took 1.9-2.1 s
// of system time, 256 KiB at a time 0.26-0.29 s (512 KiB: 0.84-1.1 s), for the first GiB or so
// after a file of that size was removed; beyond that recent memory, both pay the host's faults
// (2.6-3.0 s per GiB). On other machines a slice costs one more syscall per 256 KiB.
#include <sys/types.h>

#include <cstddef>
#include <string_view>

#include "common/errors/error.hpp"

namespace kbfleet::posix {

inline constexpr std::size_t kWriteSliceBytes = std::size_t{256} << 10;

// write(2)s all of `bytes` at the fd's offset, `slice` bytes at most per call; retries EINTR and
// short writes. IO_ERROR naming `what` (a path) on failure.
[[nodiscard]] Status write_sliced(int fd, std::string_view bytes, std::string_view what,
                                  std::size_t slice = kWriteSliceBytes);
// pwrite(2)s all of `bytes` at `offset`, the same way; the fd's offset is not used, so a write
// that failed half-way can be retried at the same offset.
[[nodiscard]] Status pwrite_sliced(int fd, std::string_view bytes, off_t offset, std::string_view what,
                                   std::size_t slice = kWriteSliceBytes);

}  // namespace kbfleet::posix
