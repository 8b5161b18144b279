// Gaining privilege: being root or holding capabilities, becoming root by setuid/setgid or a
// setuid-root binary, and the privileged calls a handler never needs (mount, new user namespaces,
// the kernel keyring).
#include <fcntl.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

namespace kbfleet::attack {
namespace {

// The value of "Name:\t..." in /proc/self/status, or "" when absent.
std::string status_field(const std::string& name) {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind(name + ":", 0) == 0) return line.substr(line.find_first_not_of(" \t", name.size() + 1));
  }
  return "";
}

}  // namespace

void identity(const Input&) {
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  getresuid(&ruid, &euid, &suid);
  getresgid(&rgid, &egid, &sgid);
  std::string cap_eff = status_field("CapEff");
  std::string ids = "uid=" + std::to_string(ruid) + "/" + std::to_string(euid) + "/" + std::to_string(suid) +
                    " gid=" + std::to_string(rgid) + "/" + std::to_string(egid) + "/" + std::to_string(sgid) +
                    " CapEff=" + (cap_eff.empty() ? "?" : cap_eff);
  if (ruid == 0 || euid == 0 || suid == 0 || rgid == 0 || egid == 0 || sgid == 0) escaped("runs as root: " + ids);
  if (cap_eff.empty()) escaped("cannot read CapEff from /proc/self/status: " + ids);
  if (cap_eff.find_first_not_of('0') != std::string::npos) escaped("holds capabilities: " + ids);
  contained("unprivileged: " + ids);
}

void setuid_root(const Input&) {
  int rc = setuid(0);
  std::string err = errno_text("setuid(0)");
  if (rc == 0 || geteuid() == 0) escaped("setuid(0) left euid " + std::to_string(geteuid()));
  contained(err);
}

void setgid_root(const Input&) {
  int rc = setgid(0);
  std::string err = errno_text("setgid(0)");
  if (rc == 0 || getegid() == 0) escaped("setgid(0) left egid " + std::to_string(getegid()));
  contained(err);
}

// Input: path (a setuid-root copy of this binary, made by the test). Runs it as `euid-probe`.
void setuid_binary(const Input& in) {
  std::string path = in.get("path");
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) contained(errno_text("pipe2"));
  pid_t pid = fork();
  if (pid < 0) contained(errno_text("fork"));
  if (pid == 0) {
    dup2(out[1], 1);
    const char* argv[] = {path.c_str(), "euid-probe", nullptr};
    execv(path.c_str(), const_cast<char**>(argv));
    std::printf("exec-failed %d\n", errno);
    std::fflush(stdout);
    _exit(127);
  }
  close(out[1]);
  std::string said = read_all(out[0]);
  waitpid(pid, nullptr, 0);
  if (said.rfind("exec-failed ", 0) == 0) {
    errno = std::atoi(said.c_str() + 12);
    contained(errno_text("execv(" + path + ")"));
  }
  if (said.rfind("euid=0\n", 0) == 0) escaped("the setuid-root binary ran with euid 0");
  contained("the setuid-root binary ran with " + said.substr(0, said.find('\n')));
}

void euid_probe() {
  std::printf("euid=%d\n", static_cast<int>(geteuid()));
  std::fflush(stdout);
  _exit(0);
}

void mount_tmpfs(const Input&) {
  if (mkdir("out/mnt", 0755) != 0) contained(errno_text("mkdir(out/mnt)"));
  if (mount("kbfleet-attack", "out/mnt", "tmpfs", 0, "size=1m") != 0) contained(errno_text("mount(tmpfs, out/mnt)"));
  umount2("out/mnt", MNT_DETACH);  // so the workspace can still be removed
  escaped("mounted a tmpfs on out/mnt");
}

void unshare_user(const Input&) {
  if (unshare(CLONE_NEWUSER) != 0) contained(errno_text("unshare(CLONE_NEWUSER)"));
  escaped("created a user namespace (and with it every capability inside it)");
}

// The user keyring is shared by every process of the uid: a channel between tasks, and where
// other programs of that uid keep credentials.
void keyctl_add(const Input&) {
  long id = syscall(SYS_add_key, "user", "kbfleet-attack", "x", 1, KEY_SPEC_USER_KEYRING);
  if (id < 0) contained(errno_text("add_key(user, KEY_SPEC_USER_KEYRING)"));
  syscall(SYS_keyctl, KEYCTL_INVALIDATE, id);
  escaped("added a key to the user keyring (id " + std::to_string(id) + ")");
}

}  // namespace kbfleet::attack
