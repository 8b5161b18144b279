// Attacks that seek privilege. The task runs as an unprivileged host uid per slot in its own user
// namespace, with no capabilities and PR_SET_NO_NEW_PRIVS; seccomp refuses mount, unshare,
// setns, keyctl and friends with EPERM.
#include <unistd.h>

#include <filesystem>

#include "tests/sandbox/hostile_fleet.hpp"

using namespace kbfleet::test;
using namespace kbfleet::test::hostile;

TEST_CASE("a task runs as a non-root uid with no effective capabilities", "[sandbox][hostile][privilege]") {
  // Attack: none; the handler reports getresuid/getresgid and CapEff from /proc/self/status.
  // Expected: no id is 0 and CapEff is 0 (per-slot uid in a user namespace, capabilities dropped).
  HostileFleet h;
  auto f = h.run("identity");
  CHECK_CONTAINED(f, "unprivileged: ");
}

TEST_CASE("a task cannot become root with setuid(0)", "[sandbox][hostile][privilege]") {
  // Attack: setuid(0). Expected: EINVAL (uid 0 has no mapping in the task's user namespace) or
  // EPERM (no CAP_SETUID), and the euid is not 0.
  HostileFleet h;
  auto f = h.run("setuid-root");
  CHECK_CONTAINED(f, "(EINVAL)", "(EPERM)");
}

TEST_CASE("a task cannot join group root with setgid(0)", "[sandbox][hostile][privilege]") {
  // Attack: setgid(0). Expected: EINVAL (gid 0 has no mapping in the task's user namespace) or
  // EPERM (no CAP_SETGID), and the egid is not 0.
  HostileFleet h;
  auto f = h.run("setgid-root");
  CHECK_CONTAINED(f, "(EINVAL)", "(EPERM)");
}

TEST_CASE("a setuid-root binary gives the task no root", "[sandbox][hostile][privilege]") {
  // Attack: execute bin/suid-probe, a copy of the attack binary that the test made owned by root
  // with mode 04755, which prints its euid. Expected: euid is the task's uid, as
  // PR_SET_NO_NEW_PRIVS ignores the setuid bit (and host root is not mapped in the task's user
  // namespace, and the plugin root may be mounted nosuid).
  if (geteuid() != 0) SKIP_TEST("making a setuid-root binary needs the test to run as root");
  HostileFleet h;
  auto probe = h.plugin_root() + "/bin/suid-probe";
  REQUIRE(std::filesystem::status(probe).permissions() == std::filesystem::perms(04755));
  auto f = h.run("setuid-binary", {{"path", probe}});
  CHECK_CONTAINED(f, "ran with euid=", "(EACCES)", "(EPERM)");
}

TEST_CASE("a task cannot mount a filesystem", "[sandbox][hostile][privilege]") {
  // Attack: mount a tmpfs on out/mnt. Expected: EPERM, from seccomp (mount denied) and the
  // missing CAP_SYS_ADMIN in the mount namespace's owning user namespace.
  HostileFleet h;
  auto f = h.run("mount");
  CHECK_CONTAINED(f, "(EPERM)");
}

TEST_CASE("a task cannot create a user namespace", "[sandbox][hostile][privilege]") {
  // Attack: unshare(CLONE_NEWUSER), which would give it every capability inside a new namespace
  // (the usual first step of a kernel exploit). Expected: EPERM from seccomp (clone/unshare with
  // CLONE_NEW* denied).
  HostileFleet h;
  auto f = h.run("unshare-user");
  CHECK_CONTAINED(f, "(EPERM)", "(ENOSPC)");
}

TEST_CASE("a task cannot use the kernel keyring", "[sandbox][hostile][privilege]") {
  // Attack: add_key("user", ..., KEY_SPEC_USER_KEYRING); the user keyring is shared by every
  // process of a uid, a channel across tasks. Expected: EPERM from seccomp (keyctl, add_key,
  // request_key denied).
  HostileFleet h;
  auto f = h.run("keyctl");
  CHECK_CONTAINED(f, "(EPERM)", "(ENOSYS)", "(EACCES)");
}
