// Attacks that read what the task must not see. The mount namespace (pivot_root into a minimal
// root holding only the task's own workspace) is the first layer, Landlock the second, and an
// unprivileged uid without capabilities the third.
#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "tests/sandbox/hostile_fleet.hpp"

using namespace kbfleet::test;
using namespace kbfleet::test::hostile;

TEST_CASE("a task cannot read another running task's workspace", "[sandbox][hostile][fs]") {
  // Attack: open <victim workspace>/out/secret.txt by its absolute host path while the victim runs
  // in the other slot of the same worker. Expected: ENOENT, as the attacker's mount namespace
  // holds only its own workspace (mounts); Landlock and the per-slot uid stop it otherwise.
  HostileFleet h;
  auto token = unique_token();
  auto victim = h.submit("victim", {{"token", token}});
  REQUIRE(!h.fleet.wait_until_running(victim).empty());
  auto secret = h.workspace(victim) + "/out/secret.txt";
  REQUIRE(read_file(secret) == token);  // the attack aims at a real file
  auto f = h.run("read-file", {{"path", secret}, {"token", token}});
  CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)");
  h.cancel(victim);
}

TEST_CASE("a task cannot read a world-readable host file outside its workspace", "[sandbox][hostile][fs]") {
  // Attack: open a 0644 file in the fleet's temp dir, outside every plugin and workspace, by its
  // absolute path. Expected: ENOENT (mounts: not in the task's root), else EACCES (Landlock).
  HostileFleet h;
  auto token = unique_token();
  auto f = h.run("read-file", {{"path", h.write_host_secret(token)}, {"token", token}});
  CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)");
}

TEST_CASE("a task cannot read /etc/shadow", "[sandbox][hostile][fs]") {
  // Attack: open /etc/shadow (0640 root:shadow). Expected: EACCES, as the task runs as an
  // unprivileged uid without CAP_DAC_OVERRIDE (userns + per-slot uid + dropped capabilities).
  HostileFleet h;
  auto f = h.run("read-shadow");
  CHECK_CONTAINED(f, "(EACCES)", "(ENOENT)");
}

TEST_CASE("a task cannot reach the host root through /proc/<pid>/root", "[sandbox][hostile][fs]") {
  // Attack: open /proc/1/root/<host secret path>. Expected: ENOENT, as in the task's pid
  // namespace pid 1 is the task's own init, whose root is the sandbox root (pid ns + fresh /proc
  // + mounts); without a pid namespace, ptrace access checks on /proc/1 (no CAP_SYS_PTRACE).
  // Where pid 1 sits in an outer user namespace (a VM's or container's init), not even the test's
  // root may follow /proc/1/root, so the attack aims at /proc/<worker pid>/root, the same host root.
  HostileFleet h;
  auto token = unique_token();
  auto secret = h.write_host_secret(token);
  std::string pid = "1";
  if (read_file("/proc/1/root" + secret).find(token) == std::string::npos) pid = std::to_string(h.worker_pid());
  REQUIRE(read_file("/proc/" + pid + "/root" + secret).find(token) != std::string::npos);
  auto f = h.run("proc-root", {{"pid", pid}, {"path", secret}, {"token", token}});
  CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)");
}

TEST_CASE("a task cannot open a host file by its file handle", "[sandbox][hostile][fs]") {
  // Attack ("shocker"): open_by_handle_at(<workspace fd>, <handle of the host secret>), where the
  // test took the handle on the host; a handle names an inode on the whole filesystem, past every
  // mount. Expected: EPERM, from seccomp (open_by_handle_at denied) and, below it, the missing
  // CAP_DAC_READ_SEARCH.
  HostileFleet h;
  auto token = unique_token();
  auto secret = h.write_host_secret(token);
  std::unique_ptr<char[]> storage(new char[sizeof(file_handle) + MAX_HANDLE_SZ]);
  auto* fh = reinterpret_cast<file_handle*>(storage.get());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, secret.c_str(), fh, &mount_id, 0) != 0) {
    SKIP_TEST("the filesystem of " << secret << " gives no file handles: " << std::strerror(errno));
  }
  std::string hex;
  for (unsigned i = 0; i < fh->handle_bytes; ++i) {
    static const char* kDigits = "0123456789abcdef";
    hex += kDigits[fh->f_handle[i] >> 4];
    hex += kDigits[fh->f_handle[i] & 15];
  }
  auto f = h.run("open-by-handle",
                 {{"handle_type", std::to_string(fh->handle_type)}, {"handle", hex}, {"token", token}});
  CHECK_CONTAINED(f, "(EPERM)");
}
