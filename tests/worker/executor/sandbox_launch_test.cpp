// The clone() launcher with every sandbox layer, driven directly through HandlerProcess: what the
// handler sees (uid, pid namespace, root, capabilities) and that statuses, signals and exec
// failures pass through kbfleet-init. The hostile suite (tests/sandbox/) attacks the same
// launcher through a whole fleet; this file pins its mechanics.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include <catch2/catch.hpp>

#include "tests/worker/executor/handler_harness.hpp"
#include "worker/executor/launch.hpp"
#include "worker/sandbox/isolation.hpp"
#include "worker/sandbox/probe.hpp"

namespace kbfleet::worker {
namespace {

namespace fs = std::filesystem;
using testing::Recorded;
using testing::TempDir;

// The host's layers, probed once (it forks and creates the slot user namespaces).
const SandboxLayers& host_layers() {
  static const SandboxLayers layers = [] {
    ProbeOptions options;
    options.init = KBFLEET_INIT;
    return probe_sandbox(options);
  }();
  return layers;
}

// Why this host cannot run the full sandbox, or "" if it can.
std::string missing_layers() {
  std::string out;
  for (const auto& l : host_layers().missing()) {
    if (l != "cgroup" && l != "netns") out += l + " ";
  }
  return out;
}

// A sandboxed shell: a workspace with out/, a plugin dir, the worker's staging dir, full layers.
struct Sandboxed {
  TempDir dir{"/var/tmp"};  // not /tmp: the sandbox's private /tmp would cover the workspace
  fs::path workspace, plugin, staging;
  LaunchSpec spec;

  explicit Sandboxed(const std::string& script, std::vector<std::string> fs_write = {"out/**"}) {
    fs::path base = fs::canonical(dir.path());
    workspace = base / "work" / "task-1";
    plugin = base / "plugin";
    staging = base / "work" / ".sandbox-root";
    for (const auto& d : {workspace / "out", plugin, staging}) fs::create_directories(d);
    spec = testing::shell(script, workspace);
    auto iso = make_isolation(host_layers(), {staging, plugin, workspace, {}, std::move(fs_write), 0, 16});
    REQUIRE(iso);
    spec.isolation = *iso;
  }
};

#define REQUIRE_FULL_SANDBOX()                                                     \
  do {                                                                             \
    if (!missing_layers().empty()) {                                               \
      WARN("SKIPPED: this host lacks sandbox layers: " + missing_layers());        \
      return;                                                                      \
    }                                                                              \
  } while (0)

TEST_CASE("a sandboxed handler is uid 1000 with no capabilities, pid 2 under kbfleet-init", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("id -u; id -g; echo pid=$$; ps_init=$(cat /proc/1/cmdline | tr '\\0' ' '); echo init=$ps_init; "
              "grep CapEff /proc/self/status; hostname");
  Recorded sink;
  auto p = testing::start(s.spec);
  testing::drive(*p, sink);
  CHECK(p->outcome().exit_code == 0);
  auto out = sink.texts(Stream::kStdout);
  REQUIRE(out.size() == 6);
  CHECK(out[0] == "1000");
  CHECK(out[1] == "1000");
  CHECK(out[2] == "pid=2");
  CHECK(out[3].rfind("init=kbfleet-init /bin/sh -c", 0) == 0);
  CHECK(out[4] == "CapEff:\t0000000000000000");
  CHECK(out[5] == "kbfleet");
}

TEST_CASE("a sandboxed handler's root holds only the system, its plugin and its workspace", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  // Listing / itself is denied (Landlock grants nothing on the root), so probe by name.
  Sandboxed s("for p in /usr/bin/sh /etc/passwd /dev/null /proc/self /tmp /home /root /var/lib /etc/shadow /sys/kernel; do "
              "if [ -e $p ]; then echo \"$p yes\"; else echo \"$p no\"; fi; done");
  Recorded sink;
  auto p = testing::start(s.spec);
  testing::drive(*p, sink);
  CHECK(sink.texts(Stream::kStdout) ==
        std::vector<std::string>{"/usr/bin/sh yes", "/etc/passwd yes", "/dev/null yes", "/proc/self yes", "/tmp yes",
                                 "/home no", "/root no", "/var/lib no", "/etc/shadow no", "/sys/kernel no"});
}

TEST_CASE("tasks entering one root template see nothing an earlier task left in /tmp, /dev/shm or its workspace",
          "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed first("echo secret > /tmp/left && echo secret > /dev/shm/left && echo secret > out/left && "
                  "touch /left 2>/dev/null || echo root-denied; mkdir /dev/left 2>/dev/null || echo dev-denied");
  Recorded sink1;
  auto p1 = testing::start(first.spec);
  testing::drive(*p1, sink1);
  CHECK(sink1.texts(Stream::kStdout) == std::vector<std::string>{"root-denied", "dev-denied"});

  // A second task of the same worker (same staging dir, so the same template), next door.
  fs::path ws2 = first.workspace.parent_path() / "task-2";
  fs::create_directories(ws2 / "out");
  LaunchSpec spec2 = testing::shell("for p in /tmp/left /dev/shm/left " + (first.workspace / "out" / "left").string() +
                                        " /left /dev/left; do if [ -e $p ]; then echo \"$p yes\"; else echo \"$p no\"; fi; done",
                                    ws2);
  auto iso2 = make_isolation(host_layers(), {first.staging, first.plugin, ws2, {}, {"out/**"}, 0, 16});
  REQUIRE(iso2);
  CHECK((*iso2)->root_template == first.spec.isolation->root_template);
  spec2.isolation = *iso2;
  Recorded sink2;
  auto p2 = testing::start(spec2);
  testing::drive(*p2, sink2);
  CHECK(sink2.texts(Stream::kStdout) ==
        std::vector<std::string>{"/tmp/left no", "/dev/shm/left no", (first.workspace / "out" / "left").string() + " no",
                                 "/left no", "/dev/left no"});
}

TEST_CASE("the launcher holds a sandboxed task's mount namespace, so its teardown is not part of the task's exit",
          "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("exit 0");
  auto l = launch(s.spec);
  REQUIRE(l);
  CHECK(static_cast<bool>(l->mount_ns));
  int status = 0;
  REQUIRE(::waitpid(l->pid, &status, 0) == l->pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a sandboxed handler writes only where permissions.fs.write allows", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("echo a > out/ok && echo written; echo b > not-declared 2>/dev/null || echo denied; "
              "echo c > /tmp/scratch && echo tmp-ok; touch /usr/x 2>/dev/null || echo usr-denied");
  Recorded sink;
  auto p = testing::start(s.spec);
  testing::drive(*p, sink);
  CHECK(sink.texts(Stream::kStdout) == std::vector<std::string>{"written", "denied", "tmp-ok", "usr-denied"});
  CHECK(fs::exists(s.workspace / "out" / "ok"));
  CHECK_FALSE(fs::exists(s.workspace / "not-declared"));
}

TEST_CASE("the handler's death by signal passes through kbfleet-init", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("kill -9 $$");
  Recorded sink;
  auto p = testing::start(s.spec);
  testing::drive(*p, sink);
  CHECK(p->outcome().reason == EndReason::kSignaled);
  CHECK(p->outcome().signal == 9);
}

TEST_CASE("SIGTERM on timeout reaches the sandboxed handler through kbfleet-init", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done");
  s.spec.limits.timeout_ms = 300;
  s.spec.limits.kill_grace_ms = 5000;
  Recorded sink;
  auto p = testing::start(s.spec);
  testing::drive(*p, sink);
  CHECK(p->outcome().reason == EndReason::kTimeout);
  CHECK(p->outcome().exit_code == 7);
  CHECK(sink.saw(Stream::kStdout, "got TERM"));
}

// The child that execs kbfleet-init leaves every signal blocked and the worker's dispositions in
// place (launch.cpp): init and the child it starts the handler in must undo both.
TEST_CASE("a sandboxed handler starts with no signal blocked or ignored, whatever the worker's", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("grep -E '^Sig(Blk|Ign):' /proc/self/status");
  struct sigaction ign {}, old_usr1 {}, old_pipe {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGUSR1, &ign, &old_usr1);
  ::sigaction(SIGPIPE, &ign, &old_pipe);
  sigset_t usr2, old_mask;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  ::pthread_sigmask(SIG_BLOCK, &usr2, &old_mask);
  Recorded sink;
  auto p = testing::start(s.spec);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  testing::drive(*p, sink);
  CHECK(p->outcome().exit_code == 0);
  auto out = sink.texts(Stream::kStdout);
  REQUIRE(out.size() == 2);
  CHECK(out[0] == "SigBlk:\t0000000000000000");
  CHECK(out[1] == "SigIgn:\t0000000000000000");
}

TEST_CASE("a handler that cannot be executed in the sandbox fails EXEC_FAILED", "[executor][sandbox]") {
  REQUIRE_FULL_SANDBOX();
  Sandboxed s("true");
  s.spec.exec = s.plugin / "missing";
  auto p = HandlerProcess::spawn(s.spec);
  REQUIRE_FALSE(p);
  CHECK(p.error().code == ErrorCode::kExecFailed);
  CHECK(p.error().message.find("missing") != std::string::npos);
  // The handler's own execve errno, as kbfleet-init's child left it (not init's, not 0).
  CHECK(p.error().details.at("errno") == std::to_string(ENOENT));
  CHECK(p.error().details.at("step") == "execve");
}

}  // namespace
}  // namespace kbfleet::worker
