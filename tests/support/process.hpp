#pragma once
// Test support: real child processes with captured output and deadlines (no sleeps).
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace kbfleet::test {

struct CommandResult {
  int exit_code = -1;  // 128 + signal if killed
  std::string out;
  std::string err;
};

// Runs argv to completion with stdin from /dev/null; env entries are added to ours. A command
// still running at the deadline is killed and the test fails through the returned exit code -2.
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds deadline,
                          const std::map<std::string, std::string>& env = {});

// A long-running process (broker, worker) whose stdout we read line by line.
class Daemon {
 public:
  // `env` entries are added to ours, as for run_command.
  Daemon(const std::vector<std::string>& argv, const std::string& stderr_path,
         const std::map<std::string, std::string>& env = {});
  ~Daemon();  // SIGKILL + reap
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Reads stdout until a line "key=value" appears; returns value or "" at the deadline.
  std::string wait_for_key(const std::string& key, std::chrono::milliseconds deadline);
  void signal(int sig);
  // Waits for exit; returns the exit status or -1 at the deadline.
  int wait(std::chrono::milliseconds deadline);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffered_;
  bool reaped_ = false;
};

// Evaluates `condition` until it holds (true) or `deadline` passes (false); between two checks it
// waits a short poll interval. For conditions nothing can signal (a file's content, a directory
// emptying, a metric): the wait ends on the condition, the deadline only bounds it.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds deadline);

// The value of the Prometheus sample `name{labels}` on http://address/metrics (0 when absent).
// Throws std::runtime_error if the endpoint cannot be scraped.
double scrape_metric(const std::string& address, const std::string& sample);

// True while `pid` exists and is not a zombie.
bool process_alive(pid_t pid);
// Pids of live host processes whose command line contains `token` (a handler started inside its
// own pid namespace cannot tell the test its host pid, but it can put a token in an argv).
std::vector<pid_t> processes_with(const std::string& token);

std::string make_temp_dir();
// `s` without trailing newlines and spaces (a command's one-line output).
std::string trim(std::string s);
void remove_tree(const std::string& path);
std::string read_file(const std::string& path);

}  // namespace kbfleet::test
