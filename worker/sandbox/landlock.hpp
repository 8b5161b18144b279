#pragma once
// The Landlock layer: a task sees only the filesystem its manifest grants, and cannot signal or
// reach (abstract unix sockets) anything outside its own sandbox, such as the worker (issue #4).
//
// Guarantees once apply_landlock() returned 0 (tests/worker/sandbox/landlock_test.cpp):
//  - every filesystem right the kernel's ABI knows is handled: what no rule grants is denied,
//    reading and executing included;
//  - a kRead rule allows reading and listing beneath it, nothing else (no write, create, delete,
//    execute, truncate, device ioctl);
//  - a file cannot be linked or renamed from a hierarchy into one with more rights (REFER, ABI 2);
//  - ABI >= 6: no kill() of processes and no connect() to abstract unix sockets outside the
//    task's Landlock domain.
// Landlock is stackable and one-way: the task and its descendants keep the restriction.
//
// Rules bind inodes, not path strings: a ruleset built in the worker from host paths stays valid
// in a mount namespace where the same directories are bind-mounted elsewhere.
//
// Split: make_landlock_ruleset() runs in the worker (allocates, returns Errors);
// landlock_allow_path() and apply_landlock() run in the launched child between clone and execve
// (raw syscalls only).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "common/posix/fd.hpp"

namespace kbfleet::worker {

enum class FsAccess {
  kRead,           // read files, list directories
  kReadExec,       // + execute
  kReadWrite,      // + write, truncate, create/remove/rename entries (no devices), device ioctls
  kReadWriteExec,  // + execute: build farms compile and run binaries in their workspace
};

struct FsRule {
  std::filesystem::path path;  // absolute; a directory grants its whole subtree, a file itself
  FsAccess access;
};

// The kernel's Landlock ABI version (1..7 known here); 0 when Landlock is not compiled in or is
// disabled at boot (lsm= without landlock). Async-signal-safe.
int landlock_abi() noexcept;

// A ruleset fd (O_CLOEXEC) for `rules` on a kernel of `abi` (from landlock_abi()), handling every
// filesystem right that ABI knows and, on ABI >= 6, scoping signals and abstract unix sockets.
// Rights an ABI lacks are left out (REFER < 2, TRUNCATE < 3, IOCTL_DEV < 5); rights of ABIs after 7
// stay unhandled (allowed) until this file learns them. A rule on a file
// (not a directory) keeps only the file rights. A rule whose path does not exist (ENOENT,
// ENOTDIR) is skipped, not an error; its path is appended to *skipped if given.
// Errors: SANDBOX_UNAVAILABLE (details layer=landlock, errno) for abi < 1, or a failed open,
// landlock_create_ruleset or landlock_add_rule naming the path.
[[nodiscard]] Result<posix::Fd> make_landlock_ruleset(const std::vector<FsRule>& rules, int abi,
                                                      std::vector<std::filesystem::path>* skipped = nullptr);

// A rule on an fd the caller keeps open (an O_PATH fd will do), e.g. kbfleet-init's: it grants
// exactly the inode the fd refers to, whatever its path names now.
struct FdRule {
  int fd;
  FsAccess access;
};

// Rules whose paths are opened once and then added to any number of rulesets: what every task's
// ruleset grants (the root template's paths), without an open, fstat and close of each path per
// task (a ruleset cannot be copied). Each rule holds the inode its path named at open(), as a
// rule in a ruleset does. Move-only; owns its fds.
class OpenedRules {
 public:
  // Opens each path (O_PATH, following symlinks, as make_landlock_ruleset does). A path that
  // does not exist (ENOENT, ENOTDIR) is left out. Errors: SANDBOX_UNAVAILABLE naming the open.
  [[nodiscard]] static Result<OpenedRules> open(const std::vector<FsRule>& rules);
  std::size_t size() const { return opened_.size(); }

 private:
  friend Result<posix::Fd> make_landlock_ruleset(const OpenedRules&, const std::vector<FdRule>&,
                                                 const std::vector<FsRule>&, int);
  struct Opened {
    std::filesystem::path path;  // for error messages
    posix::Fd fd;
    bool directory;
    FsAccess access;
  };
  std::vector<Opened> opened_;
};

// As make_landlock_ruleset above, with `base`'s rules and `fds` added before `rules`. Errors:
// as above, and SANDBOX_UNAVAILABLE for a landlock_add_rule on `base` or `fds` that failed.
[[nodiscard]] Result<posix::Fd> make_landlock_ruleset(const OpenedRules& base, const std::vector<FdRule>& fds,
                                                      const std::vector<FsRule>& rules, int abi);

// The rights `access` grants on a directory, limited to what `abi` handles (a rule may not grant
// a right its ruleset does not handle: EINVAL): for landlock_allow_path(), which the child calls
// for mounts that do not exist before it runs.
std::uint64_t landlock_access(FsAccess access, int abi);

// Child side: adds a rule granting `allowed` (from landlock_access()) beneath `path` to an
// existing ruleset, for what exists only in the child, e.g. a tmpfs or /proc mounted in its own
// mount namespace. On a non-directory only the file rights are kept. Returns 0, or -1 with errno
// (ENOENT included: here a missing path is the caller's bug). Async-signal-safe: open, fstat,
// landlock_add_rule, close. The rule lands in the ruleset object the worker's fd also refers to:
// use a ruleset for one task only.
int landlock_allow_path(int ruleset_fd, const char* path, std::uint64_t allowed) noexcept;

// Child side: landlock_restrict_self(ruleset_fd, 0). The caller must have set no_new_privs
// (set_no_new_privs() in capabilities.hpp) unless it holds CAP_SYS_ADMIN in its user namespace;
// the kernel returns EPERM otherwise. The fd may be closed afterwards (execve closes it, being
// O_CLOEXEC). Returns 0, or -1 with errno. Async-signal-safe: no allocation.
int apply_landlock(int ruleset_fd) noexcept;

// The rules of a task's workspace from its manifest globs (relative to the workspace, validated:
// no leading '/', no ".."). Each glob grants its longest leading directory without glob
// characters (* ? [ {), compared by path component: "out/**" -> <ws>/out, "data/*.json" ->
// <ws>/data, "**" -> <ws>; a glob without glob characters ("logs/today.txt") is a literal path
// and grants itself. Read globs give kRead, write globs kReadWriteExec; a path named by several
// globs appears once with the union of their access. Order: first appearance. Pure.
std::vector<FsRule> workspace_rules(const std::filesystem::path& workspace,
                                    const std::vector<std::string>& read_globs,
                                    const std::vector<std::string>& write_globs);

}  // namespace kbfleet::worker
