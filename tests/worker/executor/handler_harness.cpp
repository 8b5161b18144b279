#include "tests/worker/executor/handler_harness.hpp"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>

#include <catch2/catch.hpp>

namespace kbfleet::worker::testing {

std::vector<OutputLine> Recorded::of(Stream stream) const {
  std::vector<OutputLine> out;
  for (const auto& line : lines) {
    if (line.stream == stream) out.push_back(line);
  }
  return out;
}

std::vector<std::string> Recorded::texts(Stream stream) const {
  std::vector<std::string> out;
  for (const auto& line : of(stream)) out.push_back(line.text);
  return out;
}

bool Recorded::saw(Stream stream, const std::string& text) const {
  auto all = texts(stream);
  return std::find(all.begin(), all.end(), text) != all.end();
}

LaunchSpec shell(const std::string& script, const std::filesystem::path& workspace) {
  LaunchSpec spec;
  spec.exec = "/bin/sh";
  spec.args = {"-c", script};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.workspace = workspace;
  spec.limits.timeout_ms = 5000;
  spec.limits.kill_grace_ms = 200;
  return spec;
}

std::unique_ptr<HandlerProcess> start(const LaunchSpec& spec) {
  auto process = HandlerProcess::spawn(spec);
  if (!process) FAIL("spawn failed: " << process.error().to_string());
  return std::move(*process);
}

std::chrono::milliseconds drive(HandlerProcess& process, Recorded& sink,
                                const std::function<bool()>& until,
                                std::chrono::milliseconds hard_limit) {
  using Clock = std::chrono::steady_clock;
  auto begin = Clock::now();
  while (!process.finished() && !(until && until())) {
    auto now = Clock::now();
    if (now - begin > hard_limit) {
      FAIL("handler pid " << process.pid() << " did not get there within " << hard_limit.count()
                          << " ms");
    }
    std::int64_t next = process.on_tick(sink, now);
    if (process.finished()) break;
    std::vector<pollfd> fds;
    for (int fd : process.poll_fds()) fds.push_back(pollfd{fd, POLLIN, 0});
    int timeout = static_cast<int>(next < 0 ? 100 : std::min<std::int64_t>(next, 100));
    int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) FAIL("poll failed: errno " << errno);
    for (const auto& p : fds) {
      if (p.revents == 0) continue;
      // A previous on_ready may have closed this fd; only pass fds the process still owns.
      auto current = process.poll_fds();
      if (std::find(current.begin(), current.end(), p.fd) != current.end()) {
        process.on_ready(p.fd, sink);
      }
    }
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - begin);
}

Subreaper::Subreaper() { REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }

Subreaper::~Subreaper() {
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  siginfo_t info{};
  while (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG) == 0 && info.si_pid != 0) info = {};
}

std::optional<int> Subreaper::await_exit(pid_t pid, std::chrono::milliseconds hard_limit) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0 && errno == ESRCH) return std::nullopt;  // its own parent reaped it in time
  REQUIRE(pidfd >= 0);
  pollfd p{pidfd, POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, static_cast<int>(hard_limit.count()));
  } while (n < 0 && errno == EINTR);
  ::close(pidfd);
  if (n != 1) FAIL("process " << pid << " is still alive after " << hard_limit.count() << " ms");
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

pid_t read_pid_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  long pid = 0;
  in >> pid;
  if (!in || pid <= 1) FAIL("no pid in " << file);
  return static_cast<pid_t>(pid);
}

bool process_gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

bool can_unshare_net() {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(::unshare(CLONE_NEWNET) == 0 ? 0 : 1);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace kbfleet::worker::testing
