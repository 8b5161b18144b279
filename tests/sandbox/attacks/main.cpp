// kbfleet-attack <name>: one static multi-call binary holding every attack of the hostile-handler
// suite, so it runs unchanged inside a minimal root. See attack.hpp for the output protocol.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

namespace kbfleet::attack {
namespace {

std::string g_argv0;

struct Entry {
  const char* name;
  AttackFn run;
};

constexpr Entry kAttacks[] = {
    {"read-file", read_file},
    {"read-shadow", read_shadow},
    {"proc-root", proc_root},
    {"open-by-handle", open_by_handle},
    {"write-file", write_file},
    {"symlink-read", symlink_read},
    {"symlink-artifact", symlink_artifact},
    {"hardlink", hardlink},
    {"control", control},
    {"connect-loopback", connect_loopback},
    {"raw-socket", raw_socket},
    {"connect-to", connect_to},
    {"fork-bomb", fork_bomb},
    {"memory-hog", memory_hog},
    {"cpu-spin", cpu_spin},
    {"cpu-spin-forked", cpu_spin_forked},
    {"fill-disk", fill_disk},
    {"signal-worker", signal_worker},
    {"ptrace-worker", ptrace_worker},
    {"worker-environ", worker_environ},
    {"own-environ", own_environ},
    {"inherited-fds", inherited_fds},
    {"outlive", outlive},
    {"victim", victim},
    {"identity", identity},
    {"setuid-root", setuid_root},
    {"setgid-root", setgid_root},
    {"setuid-binary", setuid_binary},
    {"mount", mount_tmpfs},
    {"unshare-user", unshare_user},
    {"keyctl", keyctl_add},
};

}  // namespace

Input Input::from_stdin() {
  Input in;
  in.json_ = read_all(0);
  return in;
}

std::string Input::get(const std::string& key) const {
  const std::string needle = "\"" + key + "\":\"";
  auto at = json_.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  auto end = json_.find('"', at);
  return end == std::string::npos ? "" : json_.substr(at, end - at);
}

void verdict_exit(const std::string& line, int code) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  _exit(code);
}
void contained(const std::string& why) { verdict_exit("CONTAINED: " + why, 0); }
void escaped(const std::string& what) { verdict_exit("ESCAPED: " + what, 1); }
void planted(const std::string& what) { verdict_exit("PLANTED: " + what, 0); }

std::string errno_text(const std::string& call) {
  int e = errno;
  const char* name = strerrorname_np(e);
  return call + ": " + std::strerror(e) + " (" + (name ? name : std::to_string(e)) + ")";
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  while (out.size() < (1u << 20)) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) return std::string(buf, static_cast<std::size_t>(n));
  return g_argv0;
}

}  // namespace kbfleet::attack

int main(int argc, char** argv) {
  using namespace kbfleet::attack;
  g_argv0 = argv[0];
  if (argc < 2) {
    std::fprintf(stderr, "usage: kbfleet-attack <attack>\n");
    return 64;
  }
  std::string name = argv[1];
  if (name == "sleeper") sleeper();
  if (name == "euid-probe") euid_probe();
  for (const auto& a : kAttacks) {
    if (name == a.name) {
      a.run(Input::from_stdin());
      std::fprintf(stderr, "kbfleet-attack: %s returned without a verdict\n", name.c_str());
      return 2;
    }
  }
  std::fprintf(stderr, "kbfleet-attack: unknown attack %s\n", name.c_str());
  return 64;
}
