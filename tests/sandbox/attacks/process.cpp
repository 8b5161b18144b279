// Reaching other processes: signalling or tracing the worker, reading its environment, using fds
// it leaked, and leaving a daemon behind that outlives the task. Also the victim task.
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

extern char** environ;

namespace kbfleet::attack {
namespace {

pid_t worker_pid(const Input& in) {
  pid_t pid = std::atoi(in.get("pid").c_str());
  if (pid <= 1) contained("no worker pid in the input");
  return pid;
}

[[noreturn]] void sleep_forever() {
  for (;;) {
    timespec t{3600, 0};
    nanosleep(&t, nullptr);
  }
}

}  // namespace

// Input: pid (the worker's host pid). SIGKILL: the test checks the worker is still alive.
void signal_worker(const Input& in) {
  pid_t pid = worker_pid(in);
  if (kill(pid, SIGKILL) == 0) escaped("sent SIGKILL to the worker (pid " + std::to_string(pid) + ")");
  contained(errno_text("kill(" + std::to_string(pid) + ", SIGKILL)"));
}

// Input: pid. PTRACE_SEIZE does not stop the tracee; our exit detaches it.
void ptrace_worker(const Input& in) {
  pid_t pid = worker_pid(in);
  if (ptrace(PTRACE_SEIZE, pid, nullptr, nullptr) == 0) {
    escaped("attached to the worker (pid " + std::to_string(pid) + ") with ptrace");
  }
  contained(errno_text("ptrace(PTRACE_SEIZE, " + std::to_string(pid) + ")"));
}

// Input: pid, token (the value of a variable only the worker's environment holds).
void worker_environ(const Input& in) {
  std::string path = "/proc/" + std::to_string(worker_pid(in)) + "/environ";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) contained(errno_text("open(" + path + ")"));
  std::string data = read_all(fd);
  close(fd);
  if (data.find(in.get("token")) != std::string::npos) escaped("read the worker's secret variable from " + path);
  contained("read " + path + " (" + std::to_string(data.size()) + " bytes) without the secret");
}

// Input: token. The worker's variables must not be inherited.
void own_environ(const Input& in) {
  std::string token = in.get("token");
  for (char** e = environ; *e; ++e) {
    if (std::string(*e).find(token) != std::string::npos) escaped("inherited the worker's secret variable");
  }
  contained("the environment holds no worker variable");
}

// Any fd above 3 was inherited from the worker (a socket to the broker, a log, another task's pipe).
void inherited_fds(const Input&) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  int max = lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > 65536 ? 65536 : static_cast<int>(lim.rlim_cur);
  std::string found;
  for (int fd = 4; fd < max; ++fd) {
    if (fcntl(fd, F_GETFD) < 0) continue;
    char target[512] = {};
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    found += " " + std::to_string(fd) + "->" + (n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?");
  }
  if (!found.empty()) escaped("inherited fds:" + found);
  contained("no fd above 3 is open (checked up to " + std::to_string(max) + ")");
}

// Input: token. Double fork + setsid: the grandchild leaves the process group and session, closes
// the task's pipes and re-executes itself as `kbfleet-attack sleeper <token>`. Only the test can
// tell whether it survives the task.
void outlive(const Input& in) {
  std::string token = in.get("token");
  std::string self = self_path();
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) contained(errno_text("pipe2"));
  pid_t child = fork();
  if (child < 0) contained(errno_text("fork"));
  if (child == 0) {
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) _exit(grandchild < 0 ? 1 : 0);
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 3; ++fd) dup2(null, fd);  // no pipe of the task keeps it waiting
    const char* argv[] = {self.c_str(), "sleeper", token.c_str(), nullptr};
    execv(self.c_str(), const_cast<char**>(argv));
    (void)!write(ready[1], "x", 1);  // exec failed
    _exit(127);
  }
  close(ready[1]);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) contained("the second fork failed");
  char byte;
  if (read(ready[0], &byte, 1) == 1) contained(errno_text("execv(" + self + ")"));
  planted("a setsid daemon `sleeper " + token + "`");
}

[[noreturn]] void sleeper() { sleep_forever(); }

// Input: token. Writes it to out/secret.txt (0644), prints `ready`, then sleeps until cancelled.
void victim(const Input& in) {
  int fd = open("out/secret.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) verdict_exit("VICTIM FAILED: " + errno_text("open(out/secret.txt)"), 1);
  std::string token = in.get("token");
  if (write(fd, token.data(), token.size()) != static_cast<ssize_t>(token.size())) {
    verdict_exit("VICTIM FAILED: " + errno_text("write"), 1);
  }
  close(fd);
  std::printf("ready\n");
  std::fflush(stdout);
  sleep_forever();
}

}  // namespace kbfleet::attack
