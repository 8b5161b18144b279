// no_new_privs and the capability drop of the launched child: raw syscalls only (capabilities(7),
// prctl(2)). No libcap: it allocates.
#include "worker/sandbox/capabilities.hpp"

#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace kbfleet::worker {
namespace {

// Capability numbers are below 64 while capabilities are two 32-bit words (version 3).
constexpr int kMaxCap = 63;

// NO_SETUID_FIXUP and KEEP_CAPS are locked cleared: a later uid change keeps clearing capabilities.
constexpr unsigned long kSecurebits =
    SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
    SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

// After setresuid() away from uid 0 with PR_SET_KEEPCAPS, capabilities stay permitted but are no
// longer effective: make CAP_SETPCAP effective again for the bounding set and the securebits.
int raise_setpcap() noexcept {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) < 0) return -1;
  constexpr unsigned kBit = 1U << CAP_SETPCAP;  // CAP_SETPCAP (8) is in the first word
  if (!(data[0].permitted & kBit) || (data[0].effective & kBit)) return 0;
  data[0].effective |= kBit;
  return static_cast<int>(::syscall(SYS_capset, &header, data));
}

}  // namespace

int set_no_new_privs() noexcept { return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

int drop_all_capabilities() noexcept {
  if (raise_setpcap() < 0) return -1;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) return -1;
  if (::prctl(PR_SET_SECUREBITS, kSecurebits, 0, 0, 0) < 0 && errno != EPERM) return -1;
  for (int cap = 0; cap <= kMaxCap; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
    if (errno == EINVAL && cap > 0) break;  // past CAP_LAST_CAP of this kernel
    return -1;
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  return static_cast<int>(::syscall(SYS_capset, &header, data));
}

}  // namespace kbfleet::worker
