// Landlock: the ruleset built in the worker, the restriction applied in the child, and the
// workspace rules derived from manifest globs. Kernel API: Documentation/userspace-api/landlock.rst.
#include "worker/sandbox/landlock.hpp"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

namespace kbfleet::worker {
namespace {

// Debian 12's <linux/landlock.h> (linux-libc-dev 6.1) stops at ABI 2: the later rights, the scope
// bits and the larger ruleset_attr are defined here, with the values of the kernel's uapi header.
// Where a newer header defines them, the static_asserts check they agree.
constexpr std::uint64_t kFsRefer = 1ULL << 13;     // LANDLOCK_ACCESS_FS_REFER, ABI 2
constexpr std::uint64_t kFsTruncate = 1ULL << 14;  // LANDLOCK_ACCESS_FS_TRUNCATE, ABI 3
constexpr std::uint64_t kFsIoctlDev = 1ULL << 15;  // LANDLOCK_ACCESS_FS_IOCTL_DEV, ABI 5
constexpr std::uint64_t kScopeAbstractUnix = 1ULL << 0;  // LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, ABI 6
constexpr std::uint64_t kScopeSignal = 1ULL << 1;        // LANDLOCK_SCOPE_SIGNAL, ABI 6
#ifdef LANDLOCK_ACCESS_FS_REFER
static_assert(LANDLOCK_ACCESS_FS_REFER == kFsRefer);
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
static_assert(LANDLOCK_ACCESS_FS_TRUNCATE == kFsTruncate);
#endif
#ifdef LANDLOCK_ACCESS_FS_IOCTL_DEV
static_assert(LANDLOCK_ACCESS_FS_IOCTL_DEV == kFsIoctlDev);
#endif
#ifdef LANDLOCK_SCOPE_SIGNAL
static_assert(LANDLOCK_SCOPE_SIGNAL == kScopeSignal);
static_assert(LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET == kScopeAbstractUnix);
#endif

// struct landlock_ruleset_attr as of ABI 6. The kernel takes the size it is given and requires
// the fields it does not know to be zero; we pass only the prefix the ABI knows.
struct RulesetAttr {
  std::uint64_t handled_access_fs;
  std::uint64_t handled_access_net;  // ABI 4; not handled here: `net: none` is a network namespace
  std::uint64_t scoped;              // ABI 6
};
constexpr std::size_t kAttrSizeAbi1 = sizeof(std::uint64_t);
static_assert(sizeof(RulesetAttr) == 24);

// The rights that apply to a file; the kernel rejects the directory ones on a non-directory
// (EINVAL). IOCTL_DEV matters for device files only.
constexpr std::uint64_t kFileRights = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                      LANDLOCK_ACCESS_FS_READ_FILE | kFsTruncate | kFsIoctlDev;

constexpr std::uint64_t kReadRights = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
// No MAKE_CHAR/MAKE_BLOCK: a task has no business creating device nodes, even in its workspace.
constexpr std::uint64_t kWriteRights =
    LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
    LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
    LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_SYM | kFsRefer | kFsTruncate | kFsIoctlDev;

// Every filesystem right the ABI knows: handling them all is what makes the ruleset deny by default.
std::uint64_t handled_fs(int abi) {
  std::uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) all |= kFsRefer;
  if (abi >= 3) all |= kFsTruncate;
  if (abi >= 5) all |= kFsIoctlDev;
  return all;
}

Error layer_error(std::string_view call, std::string_view object, int err) {
  Error e = errno_error(call, object, err).value();
  e.code = ErrorCode::kSandboxUnavailable;
  e.details["layer"] = "landlock";
  return e;
}

// Adds a path-beneath rule for the file or directory open at `fd`, keeping only the file rights
// when it is not a directory. Async-signal-safe; -1 with errno on failure.
int add_rule_known(int ruleset, int fd, bool directory, std::uint64_t allowed) noexcept {
  if (!directory) allowed &= kFileRights;
  landlock_path_beneath_attr attr{};
  attr.allowed_access = allowed;
  attr.parent_fd = fd;
  return static_cast<int>(::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &attr, 0));
}

int add_rule_fd(int ruleset, int fd, std::uint64_t allowed) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) < 0) return -1;
  return add_rule_known(ruleset, fd, S_ISDIR(st.st_mode), allowed);
}

// Adds one rule; false (not an error) if the path does not exist.
Result<bool> add_rule(int ruleset, const FsRule& rule, int abi) {
  posix::Fd fd(::open(rule.path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return tl::unexpected(layer_error("open", rule.path.native(), errno));
  }
  if (add_rule_fd(ruleset, fd.get(), landlock_access(rule.access, abi)) < 0) {
    return tl::unexpected(layer_error("landlock_add_rule", rule.path.native(), errno));
  }
  return true;
}

bool has_glob_char(const std::string& component) {
  return component.find_first_of("*?[{") != std::string::npos;
}

// The longest leading directory of `glob` without glob characters, under `workspace`.
std::filesystem::path glob_root(const std::filesystem::path& workspace, const std::string& glob) {
  std::filesystem::path out = workspace;
  for (const auto& part : std::filesystem::path(glob)) {
    const std::string& s = part.native();
    if (s.empty() || s == ".") continue;  // "out/" ends in an empty component; "./out"
    if (has_glob_char(s)) break;
    out /= part;
  }
  return out;
}

// Access as bits, so two rules on one path merge into their union.
constexpr unsigned kBitRead = 1, kBitExec = 2, kBitWrite = 4;
unsigned bits_of(FsAccess a) {
  switch (a) {
    case FsAccess::kRead: return kBitRead;
    case FsAccess::kReadExec: return kBitRead | kBitExec;
    case FsAccess::kReadWrite: return kBitRead | kBitWrite;
    case FsAccess::kReadWriteExec: return kBitRead | kBitWrite | kBitExec;
  }
  return kBitRead;
}
FsAccess access_of(unsigned bits) {
  if (bits & kBitWrite) return bits & kBitExec ? FsAccess::kReadWriteExec : FsAccess::kReadWrite;
  return bits & kBitExec ? FsAccess::kReadExec : FsAccess::kRead;
}

Result<posix::Fd> create_ruleset(int abi) {
  if (abi < 1) {
    return make_error(ErrorCode::kSandboxUnavailable,
                      "Landlock is not available on this kernel (needs Linux >= 5.13 with landlock in lsm=)",
                      {{"layer", "landlock"}});
  }
  RulesetAttr attr{};
  attr.handled_access_fs = handled_fs(abi);
  std::size_t size = kAttrSizeAbi1;
  if (abi >= 6) {
    attr.scoped = kScopeAbstractUnix | kScopeSignal;
    size = sizeof attr;
  }
  posix::Fd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, size, 0)));
  if (!ruleset) return tl::unexpected(layer_error("landlock_create_ruleset", "abi " + std::to_string(abi), errno));
  return ruleset;
}

Status add_rules(int ruleset, const std::vector<FsRule>& rules, int abi, std::vector<std::filesystem::path>* skipped) {
  for (const FsRule& rule : rules) {
    auto added = add_rule(ruleset, rule, abi);
    if (!added) return tl::unexpected(std::move(added.error()));
    if (!*added && skipped) skipped->push_back(rule.path);
  }
  return {};
}


}  // namespace

int landlock_abi() noexcept {
  long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

Result<posix::Fd> make_landlock_ruleset(const std::vector<FsRule>& rules, int abi,
                                        std::vector<std::filesystem::path>* skipped) {
  auto ruleset = create_ruleset(abi);
  if (!ruleset) return ruleset;
  if (auto st = add_rules(ruleset->get(), rules, abi, skipped); !st) return tl::unexpected(st.error());
  return ruleset;
}

Result<OpenedRules> OpenedRules::open(const std::vector<FsRule>& rules) {
  OpenedRules out;
  for (const FsRule& rule : rules) {
    posix::Fd fd(::open(rule.path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      return tl::unexpected(layer_error("open", rule.path.native(), errno));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return tl::unexpected(layer_error("fstat", rule.path.native(), errno));
    out.opened_.push_back({rule.path, std::move(fd), S_ISDIR(st.st_mode), rule.access});
  }
  return out;
}

Result<posix::Fd> make_landlock_ruleset(const OpenedRules& base, const std::vector<FdRule>& fds,
                                        const std::vector<FsRule>& rules, int abi) {
  auto ruleset = create_ruleset(abi);
  if (!ruleset) return ruleset;
  for (const auto& o : base.opened_) {
    if (add_rule_known(ruleset->get(), o.fd.get(), o.directory, landlock_access(o.access, abi)) < 0) {
      return tl::unexpected(layer_error("landlock_add_rule", o.path.native(), errno));
    }
  }
  for (const FdRule& r : fds) {
    if (add_rule_fd(ruleset->get(), r.fd, landlock_access(r.access, abi)) < 0) {
      return tl::unexpected(layer_error("landlock_add_rule", "fd " + std::to_string(r.fd), errno));
    }
  }
  if (auto st = add_rules(ruleset->get(), rules, abi, nullptr); !st) return tl::unexpected(st.error());
  return ruleset;
}


std::uint64_t landlock_access(FsAccess access, int abi) {
  std::uint64_t rights = kReadRights;
  switch (access) {
    case FsAccess::kRead: break;
    case FsAccess::kReadExec: rights |= LANDLOCK_ACCESS_FS_EXECUTE; break;
    case FsAccess::kReadWrite: rights |= kWriteRights; break;
    case FsAccess::kReadWriteExec: rights |= kWriteRights | LANDLOCK_ACCESS_FS_EXECUTE; break;
  }
  return rights & handled_fs(abi);
}

int landlock_allow_path(int ruleset_fd, const char* path, std::uint64_t allowed) noexcept {
  int fd = ::open(path, O_PATH | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = add_rule_fd(ruleset_fd, fd, allowed);
  int saved = errno;
  ::close(fd);
  errno = saved;
  return rc;
}

int apply_landlock(int ruleset_fd) noexcept {
  return static_cast<int>(::syscall(SYS_landlock_restrict_self, ruleset_fd, 0));
}

std::vector<FsRule> workspace_rules(const std::filesystem::path& workspace,
                                    const std::vector<std::string>& read_globs,
                                    const std::vector<std::string>& write_globs) {
  std::vector<std::pair<std::filesystem::path, unsigned>> merged;
  auto add = [&](const std::string& glob, FsAccess access) {
    std::filesystem::path root = glob_root(workspace, glob);
    auto it = std::find_if(merged.begin(), merged.end(), [&](const auto& e) { return e.first == root; });
    if (it == merged.end()) {
      merged.emplace_back(std::move(root), bits_of(access));
    } else {
      it->second |= bits_of(access);
    }
  };
  for (const auto& g : read_globs) add(g, FsAccess::kRead);
  for (const auto& g : write_globs) add(g, FsAccess::kReadWriteExec);
  std::vector<FsRule> out;
  out.reserve(merged.size());
  for (auto& [path, bits] : merged) out.push_back(FsRule{std::move(path), access_of(bits)});
  return out;
}

}  // namespace kbfleet::worker
