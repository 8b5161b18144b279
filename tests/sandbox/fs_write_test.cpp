// Attacks that write outside permissions.fs.write (["out/**"]) or point links at host files. The
// read-only minimal root (mounts) is the first layer, Landlock's write rules the second; the
// worker's artifact collector (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, regular files only)
// guards what leaves the workspace.
#include <filesystem>

#include "tests/sandbox/hostile_fleet.hpp"

using namespace kbfleet::test;
using namespace kbfleet::test::hostile;
namespace fs = std::filesystem;

TEST_CASE("a task cannot create a file in its plugin's root", "[sandbox][hostile][fs]") {
  // Attack: create <plugin root>/pwned.txt, e.g. to change the plugin for later tasks. Expected:
  // EROFS (the plugin root is mounted read-only), else EACCES (Landlock, unprivileged uid).
  HostileFleet h;
  auto path = h.plugin_root() + "/pwned.txt";
  auto f = h.run("write-file", {{"path", path}, {"token", unique_token()}});
  CHECK_CONTAINED(f, "(EROFS)", "(EACCES)");
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("a task cannot create a file in /usr", "[sandbox][hostile][fs]") {
  // Attack: create /usr/kbfleet-attack-<token>. Expected: EROFS (read-only bind of /usr in the
  // minimal root), else EACCES (unprivileged uid).
  HostileFleet h;
  auto token = unique_token();
  auto path = "/usr/kbfleet-attack-" + token;
  auto f = h.run("write-file", {{"path", path}, {"token", token}});
  CHECK_CONTAINED(f, "(EROFS)", "(EACCES)");
  CHECK_FALSE(fs::exists(path));
  std::error_code ec;
  fs::remove(path, ec);  // an escape must not leave litter on the host
}

TEST_CASE("a task cannot create a file in a world-writable host directory", "[sandbox][hostile][fs]") {
  // Attack: create a file in the fleet's temp dir host/ (mode 01777, like /tmp), outside every
  // workspace. Expected: ENOENT (not in the task's root); Landlock as the second layer. Its own
  // /tmp is a private tmpfs.
  HostileFleet h;
  auto path = h.host_dir() + "/pwned.txt";
  auto f = h.run("write-file", {{"path", path}, {"token", unique_token()}});
  CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)", "(EROFS)");
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("a task cannot write in a workspace directory its manifest does not allow", "[sandbox][hostile][fs]") {
  // Attack: create pwned.txt in the workspace root, which fs.write ["out/**"] does not cover.
  // Expected: EROFS/EACCES (only <workspace>/out is mounted read-write; Landlock write rule).
  HostileFleet h;
  auto f = h.run("write-file", {{"path", "pwned.txt"}, {"token", unique_token()}});
  CHECK_CONTAINED(f, "(EROFS)", "(EACCES)");
}

TEST_CASE("a task cannot read a host file through a symlink it made", "[sandbox][hostile][fs]") {
  // Attack: symlink out/link -> <host secret> and read through it. A symlink is only a string,
  // resolved in the task's own view. Expected: ENOENT (mounts), else EACCES (Landlock).
  HostileFleet h;
  auto token = unique_token();
  auto f = h.run("symlink-read", {{"path", h.write_host_secret(token)}, {"token", token}});
  CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)");
}

TEST_CASE("the artifact collector refuses symlinked artifacts", "[sandbox][hostile][fs][artifacts]") {
  // Attack: leave the declared artifacts out/leak.txt -> <host secret> and out/leakdir -> <host
  // dir> (artifact out/leakdir/secret.txt), so that the worker, outside the sandbox, uploads the
  // host file. Expected: the worker's collector refuses both with PERMISSION_DENIED (openat2
  // RESOLVE_NO_SYMLINKS) and stores neither; the task itself succeeds.
  HostileFleet h;
  auto secret = h.write_host_secret(unique_token());
  auto f = h.run("symlink-artifact", {{"path", secret}, {"dir", h.host_dir()}}, Plugin::kWithArtifacts);
  INFO(f.describe());
  REQUIRE(f.output.find("PLANTED: ") != std::string::npos);
  CHECK(f.state == "succeeded");
  CHECK_FALSE(f.has_artifact("leak"));
  CHECK_FALSE(f.has_artifact("leakdir"));
  std::string errors = f.status["outcome"].value("artifact_errors", nlohmann::json::array()).dump();
  CHECK(errors.find("leak: PERMISSION_DENIED") != std::string::npos);
  CHECK(errors.find("leakdir: PERMISSION_DENIED") != std::string::npos);
}

TEST_CASE("a task cannot hard-link a host file into its workspace", "[sandbox][hostile][fs]") {
  // Attack: link(<host secret>, out/hard.txt); a hard link is the host inode under a workspace
  // name, readable by the task and collected as an ordinary file (artifact `hard`). Expected:
  // ENOENT (the file is not in the task's root), else EXDEV/EPERM (Landlock refers, protected
  // hardlinks for an unprivileged uid). Nothing is stored.
  HostileFleet h;
  auto token = unique_token();
  auto f = h.run("hardlink", {{"path", h.write_host_secret(token)}, {"token", token}}, Plugin::kWithArtifacts);
  CHECK_CONTAINED(f, "(ENOENT)", "(EACCES)", "(EPERM)", "(EXDEV)");
  CHECK_FALSE(f.has_artifact("hard"));
}

TEST_CASE("control: the attack binary runs and may write where fs.write allows", "[sandbox][hostile][fs]") {
  // Not an attack. It shows that a CONTAINED elsewhere comes from the sandbox, not from an attack
  // binary that cannot run or a workspace that cannot be written: the static binary runs from the
  // plugin root, writes out/control.txt and the worker collects it.
  HostileFleet h;
  auto f = h.run("control", {{"token", unique_token()}}, Plugin::kWithArtifacts);
  INFO(f.describe());
  CHECK(f.output.find("CONTROL OK") != std::string::npos);
  CHECK(f.state == "succeeded");
  CHECK(f.has_artifact("control"));
}
