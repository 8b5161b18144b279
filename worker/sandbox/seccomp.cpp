// The seccomp deny list compiled with libseccomp once, exported as a BPF program kept in memory.
// libseccomp 2.5.4 (Debian 12) has no export to a buffer (seccomp_export_bpf_mem is 2.6), so the
// program goes through a memfd and is read back.
#include "worker/sandbox/seccomp.hpp"

#include <errno.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>

#include "common/posix/fd.hpp"

namespace kbfleet::worker {
namespace {

// CLONE_NEWTIME (0x80) is absent on purpose: for clone() that bit lies in CSIGNAL, the exit
// signal byte, so the kernel never reads it as a namespace flag; only clone3() and unshare()
// take it, and both are denied outright.
constexpr std::uint64_t kCloneNamespaceFlags[] = {CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,
                                                  CLONE_NEWNET,  CLONE_NEWIPC, CLONE_NEWUTS,
                                                  CLONE_NEWCGROUP};
constexpr std::uint32_t kPersonalityQuery = 0xffffffff;
constexpr std::uint64_t kLow32 = 0xffffffff;

// A comparison with every field set (the SCMP_A* macros leave datum_b to the compiler, which
// -Wmissing-field-initializers rejects).
scmp_arg_cmp arg(unsigned index, scmp_compare op, std::uint64_t a, std::uint64_t b = 0) {
  return scmp_arg_cmp{index, op, a, b};
}

struct CtxRelease {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxRelease>;

Error layer_error(std::string_view call, std::string_view object, int err) {
  Error e = errno_error(call, object, err).value();
  e.code = ErrorCode::kSandboxUnavailable;
  e.details["layer"] = "seccomp";
  return e;
}

// libseccomp returns -errno.
Status check(int rc, std::string_view call, std::string_view object) {
  if (rc < 0) return tl::unexpected(layer_error(call, object, -rc));
  return {};
}

// The argument rules libseccomp can express: ioctl, clone, clone3.
Status add_argument_rules(scmp_filter_ctx ctx) {
  Status rc;
  // The kernel truncates the ioctl command to 32 bits: compare only those (CVE-2019-10063).
  for (auto [cmd, name] : {std::pair{TIOCSTI, "ioctl(TIOCSTI)"}, std::pair{TIOCLINUX, "ioctl(TIOCLINUX)"}}) {
    rc = check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                                arg(1, SCMP_CMP_MASKED_EQ, kLow32, static_cast<std::uint64_t>(cmd))),
               "seccomp_rule_add", name);
    if (!rc) return rc;
  }
  for (std::uint64_t flag : kCloneNamespaceFlags) {
    rc = check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                arg(0, SCMP_CMP_MASKED_EQ, flag, flag)),
               "seccomp_rule_add", "clone(CLONE_NEW*)");
    if (!rc) return rc;
  }
  return check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "seccomp_rule_add",
               "clone3");
}

// personality() is allowed iff the low 32 bits of its argument (all the kernel reads: the
// parameter is an unsigned int) are PER_LINUX (0) or the query 0xffffffff. libseccomp 2.5 cannot
// say this: it rejects two comparisons of one argument in a rule (EINVAL) and has no masked
// not-equal. So these few instructions run before libseccomp's program; everything they do not
// answer falls through to it, including syscalls of another architecture (the bad-arch action).
std::vector<sock_filter> personality_prefix() {
  constexpr std::uint32_t kArgLow = offsetof(seccomp_data, args[0]) +
                                    (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? 0 : sizeof(std::uint32_t));
  const auto arch = static_cast<std::uint32_t>(seccomp_arch_native());  // SCMP_ARCH_* = AUDIT_ARCH_*
  const auto nr = static_cast<std::uint32_t>(SCMP_SYS(personality));
  // Jump offsets count from the next instruction; 8 is the first instruction after the prefix.
  return {
      /*0*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      /*1*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 6),  // other arch: to 8
      /*2*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      /*3*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 4),  // other syscall: to 8
      /*4*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArgLow),
      /*5*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0),                   // PER_LINUX: to 8
      /*6*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kPersonalityQuery, 1, 0),   // query: to 8
      /*7*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
  };
}

// The prefix, then libseccomp's program read back from a memfd.
Result<std::vector<sock_filter>> compile_program(scmp_filter_ctx ctx) {
  posix::Fd fd(::memfd_create("kbfleet-seccomp", MFD_CLOEXEC));
  if (!fd) return tl::unexpected(layer_error("memfd_create", "kbfleet-seccomp", errno));
  if (auto rc = check(seccomp_export_bpf(ctx, fd.get()), "seccomp_export_bpf", "memfd"); !rc) {
    return tl::unexpected(std::move(rc.error()));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return tl::unexpected(layer_error("fstat", "seccomp memfd", errno));
  auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0 || size % sizeof(sock_filter) != 0) {
    return make_error(ErrorCode::kSandboxUnavailable,
                      "seccomp_export_bpf wrote " + std::to_string(size) + " bytes, not a BPF program",
                      {{"layer", "seccomp"}});
  }
  std::vector<sock_filter> code = personality_prefix();
  const std::size_t prefix = code.size();
  if (prefix + size / sizeof(sock_filter) > BPF_MAXINSNS) {
    return make_error(ErrorCode::kSandboxUnavailable, "the seccomp program is too long", {{"layer", "seccomp"}});
  }
  code.resize(prefix + size / sizeof(sock_filter));
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd.get(), reinterpret_cast<char*>(code.data() + prefix) + done, size - done,
                        static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return tl::unexpected(layer_error("pread", "seccomp memfd", n < 0 ? errno : EIO));
    done += static_cast<std::size_t>(n);
  }
  return code;
}

}  // namespace

const std::vector<std::string>& SeccompFilter::denied() {
  static const std::vector<std::string> kDenied = {
      "ptrace",        "process_vm_readv", "process_vm_writev", "mount",          "umount2",
      "pivot_root",    "chroot",           "move_mount",        "open_tree",      "fsopen",
      "fsconfig",      "fsmount",          "fspick",            "mount_setattr",  "kexec_load",
      "kexec_file_load", "bpf",            "keyctl",            "add_key",        "request_key",
      "userfaultfd",   "perf_event_open",  "unshare",           "setns",          "open_by_handle_at",
      "name_to_handle_at", "init_module",  "finit_module",      "delete_module",  "swapon",
      "swapoff",       "reboot",           "acct",              "quotactl",       "syslog",
      "iopl",          "ioperm",           "settimeofday",      "clock_settime",  "clock_adjtime",
      "adjtimex",      "lookup_dcookie",   "fanotify_init",
      // io_uring runs operations without passing them through this filter.
      "io_uring_setup", "io_uring_enter", "io_uring_register",
  };
  return kDenied;
}

Result<SeccompFilter> SeccompFilter::build() {
  Ctx ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return make_error(ErrorCode::kSandboxUnavailable, "seccomp_init failed", {{"layer", "seccomp"}});
  // Only the native ABI is in the filter; libseccomp then also sends x32 syscall numbers (which
  // carry AUDIT_ARCH_X86_64) to the bad-arch action.
  if (auto rc = check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                      "seccomp_attr_set", "ACT_BADARCH=KILL_PROCESS");
      !rc) {
    return tl::unexpected(std::move(rc.error()));
  }
  // A binary tree of the syscall numbers instead of a linear list. The kernel runs the program
  // once per syscall number when it is attached (the cache of always-allowed syscalls, 5.11), so
  // a program that answers in O(log n) halves the cost of seccomp() in every spawn (~190 -> ~105
  // us measured here).
  if (auto rc = check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp_attr_set",
                      "CTL_OPTIMIZE=2 (binary tree)");
      !rc) {
    return tl::unexpected(std::move(rc.error()));
  }
  std::vector<std::string> unknown;
  for (const std::string& name : denied()) {
    // Negative: unknown to libseccomp, or a pseudo-syscall (not on this architecture).
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr < 0) {
      unknown.push_back(name);
      continue;
    }
    if (auto rc = check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0), "seccomp_rule_add", name); !rc) {
      return tl::unexpected(std::move(rc.error()));
    }
  }
  if (auto rc = add_argument_rules(ctx.get()); !rc) return tl::unexpected(std::move(rc.error()));
  auto code = compile_program(ctx.get());
  if (!code) return tl::unexpected(std::move(code.error()));
  return SeccompFilter(std::move(*code), std::move(unknown));
}

SeccompFilter::SeccompFilter(std::vector<sock_filter> code, std::vector<std::string> unknown)
    : code_(std::move(code)), unknown_(std::move(unknown)) {
  prog_.len = static_cast<unsigned short>(code_.size());
  prog_.filter = code_.data();
}

SeccompFilter::SeccompFilter(SeccompFilter&& o) noexcept
    : code_(std::move(o.code_)), unknown_(std::move(o.unknown_)) {
  prog_.len = static_cast<unsigned short>(code_.size());
  prog_.filter = code_.data();
  o.prog_ = {};
}

SeccompFilter& SeccompFilter::operator=(SeccompFilter&& o) noexcept {
  if (this != &o) {
    code_ = std::move(o.code_);
    unknown_ = std::move(o.unknown_);
    prog_.len = static_cast<unsigned short>(code_.size());
    prog_.filter = code_.data();
    o.prog_ = {};
  }
  return *this;
}

int apply_seccomp(const sock_fprog* prog) noexcept {
  return static_cast<int>(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog));
}

}  // namespace kbfleet::worker
