#pragma once
// The protocol every attack follows (see tests/sandbox/README.md). An attack tries one escape and
// prints exactly one verdict line on stdout:
//   CONTAINED: <what stopped it>   exit 0   the escape failed
//   ESCAPED: <what it achieved>    exit 1   the escape worked
//   PLANTED: <what it left>        exit 0   only the test can judge from outside (a symlink for
//                                           the artifact collector, a daemon that may outlive)
// Quota attacks (fork bomb, memory, CPU, disk) exit 1 even when contained, so the task fails and
// the worker names the limit that stopped it.
// Inputs come from the task's input on stdin: a flat JSON object of string values.
#include <string>

namespace kbfleet::attack {

class Input {
 public:
  static Input from_stdin();
  // The string value of `key`, or "" when absent. Values hold no quotes or backslashes.
  std::string get(const std::string& key) const;

 private:
  std::string json_;
};

[[noreturn]] void contained(const std::string& why);
[[noreturn]] void escaped(const std::string& what);
[[noreturn]] void planted(const std::string& what);
// Prints `line` (a verdict) and exits with `code`: for quota attacks that fail on purpose.
[[noreturn]] void verdict_exit(const std::string& line, int code);

// "<call>: <strerror> (<ERRNO>)" for the current errno.
std::string errno_text(const std::string& call);
// Reads `fd` to EOF (at most 1 MiB); closes nothing.
std::string read_all(int fd);
// The absolute path of this program, for re-exec (/proc/self/exe, else argv[0]).
std::string self_path();

// Each attack: reads what it needs from the input, ends with one of the verdicts above.
using AttackFn = void (*)(const Input&);

void read_file(const Input&);          // fs_read.cpp
void read_shadow(const Input&);
void proc_root(const Input&);
void open_by_handle(const Input&);
void write_file(const Input&);         // fs_write.cpp
void symlink_read(const Input&);
void symlink_artifact(const Input&);
void hardlink(const Input&);
void control(const Input&);
void connect_loopback(const Input&);   // net.cpp
void raw_socket(const Input&);
void fork_bomb(const Input&);          // limits.cpp
void memory_hog(const Input&);
void cpu_spin(const Input&);
void cpu_spin_forked(const Input&);
void connect_to(const Input&);             // net.cpp
void fill_disk(const Input&);
void signal_worker(const Input&);      // process.cpp
void ptrace_worker(const Input&);
void worker_environ(const Input&);
void own_environ(const Input&);
void inherited_fds(const Input&);
void outlive(const Input&);
void victim(const Input&);
void identity(const Input&);           // privilege.cpp
void setuid_root(const Input&);
void setgid_root(const Input&);
void setuid_binary(const Input&);
void mount_tmpfs(const Input&);
void unshare_user(const Input&);
void keyctl_add(const Input&);

// Helper modes that are not handlers: re-executed by outlive and setuid_binary.
[[noreturn]] void sleeper();
[[noreturn]] void euid_probe();

}  // namespace kbfleet::attack
