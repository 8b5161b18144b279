#pragma once
// The hostile-handler suite's fleet: a real broker and one real worker with two slots (so an
// attacker runs beside a victim task), and two plugins written at run time whose handlers are the
// attacks of the static kbfleet-attack binary (tests/sandbox/attacks/): `hostile` holds every
// attack; `hostile-artifacts` holds those aimed at the artifact collector, with their artifacts
// declared (kept apart so the other attacks do not report missing artifacts).
//
// The fleet's temp dir is made 0755 and its host/ dir 01777 (like /tmp): a host secret there is
// readable and writable by any uid, so only the sandbox, not the test's own directory
// permissions, can stop an attack on it.
#include <sys/types.h>

#include <initializer_list>
#include <map>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/fleet.hpp"

namespace kbfleet::test::hostile {

// permissions.quotas of the plugin; each limit test lowers the one it attacks.
struct Quotas {
  int timeout_ms = 20000;
  int memory_mb = 256;
  int cpu_ms = 10000;
  int pids = 64;
  int disk_mb = 64;  // the workspace's size
};

// A finished task: its state, `kbfleet status --json`, and its output (`kbfleet tail`).
struct Finished {
  std::string id;
  std::string state;  // "" if it did not finish in time
  nlohmann::json status;
  std::string output;  // stdout then stderr lines
  std::string error_code() const;  // outcome.error.code, or ""
  bool has_artifact(const std::string& name) const;
  std::string describe() const;  // for INFO
};

// kNet: `hostile-net`, whose only handler is connect-to and whose net allow-list names only
// task_net_host(0) (every port).
enum class Plugin { kHostile, kWithArtifacts, kNet };

// The --task-net subnet for this test process (a /24 in 10.224.0.0/12 chosen by the pid: tests
// running at once use different ones), and the host-side address of slot `slot`'s veth in it.
std::string task_net();
std::string task_net_host(int slot);

class HostileFleet {
 public:
  explicit HostileFleet(Quotas quotas = {}, std::map<std::string, std::string> worker_env = {},
                        std::vector<std::string> worker_args = {}, std::vector<std::string> broker_args = {});

  // Submits handler `attack` with `input` as a flat JSON object; returns the task id.
  std::string submit(const std::string& attack, const std::map<std::string, std::string>& input = {},
                     Plugin plugin = Plugin::kHostile) const;
  // Submits and waits until the task is terminal.
  Finished run(const std::string& attack, const std::map<std::string, std::string>& input = {},
               Plugin plugin = Plugin::kHostile) const;
  // Cancels a task and waits until it is terminal (bounded).
  void cancel(const std::string& task_id) const;

  // A 0644 file holding `token` in host_dir(), outside every plugin and workspace.
  std::string write_host_secret(const std::string& token) const;

  std::string plugin_root() const { return fleet.dir + "/plugins/hostile"; }
  std::string host_dir() const { return fleet.dir + "/host"; }
  // The workspace of attempt 1 of a task on the (only) worker.
  std::string workspace(const std::string& task_id) const { return fleet.work_dirs.at(0) + "/" + task_id + "-1"; }
  pid_t worker_pid() const { return fleet.workers.at(0)->pid(); }

  Fleet fleet;
};

// A fresh random token, unguessable by an attack that did not read it.
std::string unique_token();

// Whether this host's kernel offers a cgroup controller (v1 or v2), for tests that need it.
bool host_has_cgroup_controller(const std::string& name);
// True on a cgroup v2 host whose worker would use v2 (memory delegated).
bool host_has_cgroup_v2_cpu_stat();

// The attack's "CONTAINED: ..." line without its prefix, or "" if it printed none.
std::string contained_reason(const std::string& output);
// Whether `reason` contains one of `expected` (an errno as "(EPERM)", or a phrase).
bool reason_is_one_of(const std::string& reason, std::initializer_list<const char*> expected);
std::string join(std::initializer_list<const char*> expected);

}  // namespace kbfleet::test::hostile

// Nothing printed ESCAPED, the attack printed CONTAINED for one of the expected reasons (...: the
// errnos or phrases the intended layers give, so a CONTAINED for a wrong reason, such as a
// mistyped path, fails), and its task succeeded.
#define CHECK_CONTAINED(finished, ...)                                                           \
  do {                                                                                           \
    INFO((finished).describe());                                                                 \
    const std::string reason_ = kbfleet::test::hostile::contained_reason((finished).output);     \
    INFO("CONTAINED because: " << reason_);                                                      \
    INFO("expected one of: " << kbfleet::test::hostile::join({__VA_ARGS__}));                    \
    CHECK((finished).output.find("ESCAPED: ") == std::string::npos);                             \
    CHECK_FALSE(reason_.empty());                                                                \
    CHECK(kbfleet::test::hostile::reason_is_one_of(reason_, {__VA_ARGS__}));                     \
    CHECK((finished).state == "succeeded");                                                      \
  } while (0)

// Reports the test skipped with its reason: CTest matches "SKIPPED: " (see CMakeLists.txt).
#define SKIP_TEST(reason)              \
  do {                                 \
    WARN("SKIPPED: " << reason);       \
    return;                            \
  } while (0)
