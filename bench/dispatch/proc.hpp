#pragma once
// Process helpers for the dispatch benchmark: start the systems under test as child processes,
// read what they print, and read their CPU time and resident memory from /proc while they run.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace kbfleet::bench {

// A child process; the destructor stops it (SIGTERM, then SIGKILL after 3 s) and reaps it.
class Child {
 public:
  Child() = default;
  Child(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {}
  Child(Child&& o) noexcept : pid_(o.pid_), out_fd_(o.out_fd_) { o.pid_ = -1; o.out_fd_ = -1; }
  Child& operator=(Child&& o) noexcept;
  ~Child() { stop(); }

  pid_t pid() const { return pid_; }
  // Reads `key=value` lines from the child's stdout until every key in `keys` was seen or the
  // deadline passed. Returns the values found (possibly fewer than asked for).
  std::map<std::string, std::string> read_keys(const std::vector<std::string>& keys, std::chrono::milliseconds deadline);
  void stop();

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
};

// fork + execv of argv[0] with stdout on a pipe (read_keys) and stderr appended to `log`.
Child spawn_exec(const std::vector<std::string>& argv, const std::string& log);
// fork, then `body` in the child (which exits with its return value); stdout on a pipe.
Child spawn_function(const std::function<int()>& body);

// utime + stime of a live process in seconds (from /proc/<pid>/stat; 10 ms resolution).
double cpu_seconds(pid_t pid);
// VmRSS of a live process in bytes (from /proc/<pid>/status).
long long rss_bytes(pid_t pid);

}  // namespace kbfleet::bench
