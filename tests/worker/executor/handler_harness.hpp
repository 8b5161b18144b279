#pragma once
// Test harness for HandlerProcess: runs real handlers (/bin/sh scripts) in a temp workspace and
// drives them with poll() over poll_fds() and on_tick(), as the worker's loop does. Every wait is
// bounded by a hard limit that fails the test; nothing sleeps and hopes.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/temp_dir.hpp"
#include "worker/executor/process.hpp"

namespace kbfleet::worker::testing {

using namespace std::chrono_literals;

// Records everything a handler produced, in order.
class Recorded : public Sink {
 public:
  void on_output(const OutputLine& line) override { lines.push_back(line); }
  void on_progress(double progress, std::string_view message) override {
    progress_reports.emplace_back(progress, std::string(message));
  }
  void on_result(std::string result_msgpack) override { results.push_back(std::move(result_msgpack)); }
  void on_fd3_invalid(std::string_view why) override { invalid.emplace_back(why); }

  std::vector<OutputLine> of(Stream stream) const;
  std::vector<std::string> texts(Stream stream) const;  // text of every piece, in order
  bool saw(Stream stream, const std::string& text) const;

  std::vector<OutputLine> lines;
  std::vector<std::pair<double, std::string>> progress_reports;
  std::vector<std::string> results;
  std::vector<std::string> invalid;
};

// A fresh directory under `base`, else $TMPDIR (or /tmp), removed with its contents.
using TempDir = kbfleet::test::TempDir;

// exec /bin/sh -c `script` in `workspace`, env PATH only, short timeouts for tests.
LaunchSpec shell(const std::string& script, const std::filesystem::path& workspace);

// spawn() that fails the test (with the error text) if the handler could not start.
std::unique_ptr<HandlerProcess> start(const LaunchSpec& spec);

// Drives `process` until it is finished() or `until()` returns true; fails the test if that
// takes longer than `hard_limit`. Returns the time spent.
std::chrono::milliseconds drive(HandlerProcess& process, Recorded& sink,
                                const std::function<bool()>& until = nullptr,
                                std::chrono::milliseconds hard_limit = 10s);

// Makes this test process the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER), so a test
// can see a handler's grandchild die and reap it, rather than depend on whatever PID 1 does.
// The destructor turns it off and reaps leftover zombies.
class Subreaper {
 public:
  Subreaper();
  ~Subreaper();
  Subreaper(const Subreaper&) = delete;
  Subreaper& operator=(const Subreaper&) = delete;
  // Waits (pidfd, bounded) until `pid` exits, reaps it and returns its wait status; fails the
  // test if it is still alive after `hard_limit`. Call once the process's parent is gone (so it
  // is ours now). nullopt: it died and its parent reaped it before dying itself (a group SIGKILL
  // reaches members one by one, so a parent can still reap a child that died a moment earlier).
  std::optional<int> await_exit(pid_t pid, std::chrono::milliseconds hard_limit = 5s);
};

// The pid a script wrote to `file` ("echo $! > file"); fails the test if absent or malformed.
pid_t read_pid_file(const std::filesystem::path& file);

// True if gone for good: kill(pid, 0) fails with ESRCH.
bool process_gone(pid_t pid);

// Whether this host lets us unshare(CLONE_NEWNET), probed in a forked child.
bool can_unshare_net();

}  // namespace kbfleet::worker::testing
