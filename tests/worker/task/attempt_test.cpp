// The launcher's per-attempt steps (worker/task/attempt.hpp) that the worker and
// kbfleet-launch-bench share: start, supervise, finish, retire, with a real handler process.
#include <poll.h>

#include <fstream>
#include <vector>

#include <catch2/catch.hpp>

#include "common/manifest/registry.hpp"
#include "tests/support/temp_dir.hpp"
#include "worker/sandbox/workspace_fs.hpp"
#include "worker/task/attempt.hpp"

using namespace kbfleet;
using namespace kbfleet::worker;
namespace fs = std::filesystem;

namespace {

// A `sandbox: none` plugin (runs without root) whose handler writes its artifact and exits 3.
fs::path write_plugin(const fs::path& dir) {
  const fs::path root = dir / "plugins" / "art";
  fs::create_directories(root / "bin");
  std::ofstream(root / "kbfleet.yaml") << "id: art\nversion: 1.0.0\nsandbox: none\n"
                                          "handlers:\n  go: { exec: bin/go.sh }\n"
                                          "artifacts:\n  - { id: report, path: \"out/report.txt\" }\n";
  std::ofstream(root / "bin" / "go.sh") << "#!/bin/sh\necho made > \"$KBFLEET_OUT/report.txt\"\nexit 3\n";
  fs::permissions(root / "bin" / "go.sh", fs::perms::owner_all);
  return dir / "plugins";
}

protocol::TaskAssignment task_of(std::string handler) {
  protocol::TaskAssignment t;
  t.task_id = "0123456789abcdef0123456789abcdef";
  t.plugin = "art";
  t.handler = std::move(handler);
  return t;
}

WorkerPolicy unsandboxed_policy() {
  WorkerPolicy p;
  p.unsandboxed = UnsandboxedPolicy::kAllow;
  p.host_env = {{"PATH", "/usr/bin:/bin"}};
  return p;
}

void supervise(TaskRun& run) {
  while (!run.process->finished()) {
    std::vector<pollfd> fds;
    for (int fd : run.process->poll_fds()) fds.push_back({fd, POLLIN, 0});
    REQUIRE(::poll(fds.data(), fds.size(), 10000) > 0);  // bounds the wait; a stuck handler fails the test
    for (const auto& p : fds) {
      if (p.revents != 0) run.process->on_ready(p.fd, run);
    }
    (void)run.process->on_tick(run, std::chrono::steady_clock::now());
  }
}

}  // namespace

TEST_CASE("an attempt runs the handler, ends with its outcome and artifact, and retires its workspace",
          "[worker][attempt]") {
  test::TempDir dir("/var/tmp");
  auto plugins = manifest::Registry::scan(write_plugin(dir.path()));
  REQUIRE(plugins);
  const WorkerPolicy policy = unsandboxed_policy();
  TaskRun run(task_of("go"));
  run.slot = 0;
  auto started = start_attempt(run, *plugins, policy, dir.path());
  REQUIRE(started);
  CHECK(run.workspace == dir.path() / "0123456789abcdef0123456789abcdef-1");
  CHECK(run.layers == std::vector<std::string>{"none"});
  supervise(run);
  finish_attempt(run);
  CHECK(run.process == nullptr);
  CHECK(run.outcome.state == "failed");
  CHECK(run.outcome.error_code == "HANDLER_FAILED");
  CHECK(run.outcome.exit_code == 3);
  CHECK(run.outcome.layers == std::vector<std::string>{"none"});
  REQUIRE(run.to_upload.size() == 1);
  CHECK(run.to_upload.front().meta.name == "report");
  CHECK(run.to_upload.front().meta.size == 5);
  run.to_upload.clear();
  retire_attempt(run);
  wait_workspaces_retired();
  CHECK_FALSE(run.workspace_fd);
  CHECK_FALSE(fs::exists(run.workspace));
}

TEST_CASE("an attempt refused before the spawn says why, and its workspace is still retired", "[worker][attempt]") {
  test::TempDir dir("/var/tmp");
  auto plugins = manifest::Registry::scan(write_plugin(dir.path()));
  REQUIRE(plugins);
  TaskRun run(task_of("nope"));
  run.slot = 0;
  auto started = start_attempt(run, *plugins, unsandboxed_policy(), dir.path());
  REQUIRE_FALSE(started);
  CHECK(started.error().error.code == ErrorCode::kHandlerNotFound);
  CHECK(started.error().error.message == "plugin 'art' has no handler 'nope'");
  CHECK(started.error().layers.empty());
  CHECK(run.process == nullptr);
  REQUIRE(fs::is_directory(run.workspace));  // made before the refusal
  retire_attempt(run);
  wait_workspaces_retired();
  CHECK_FALSE(fs::exists(run.workspace));
}
