// Attacks that exhaust the host. Each quota is enforced by the kernel for the whole task and
// ends it with its own error code. Each attack gives up far above its quota and reports ESCAPED.
#include "tests/sandbox/hostile_fleet.hpp"

using namespace kbfleet::test;
using namespace kbfleet::test::hostile;

TEST_CASE("a fork bomb is stopped by the pids quota and ends PIDS_LIMIT", "[sandbox][hostile][limits]") {
  // Attack: fork until fork fails (at most 1024 children, each blocking forever), then exit 1.
  // Expected: fork fails with EAGAIN at pids: 16 (the task cgroup's pids.max) and the task ends
  // PIDS_LIMIT; its children die with it (cgroup kill, pid-namespace init).
  if (!host_has_cgroup_controller("pids")) SKIP_TEST("this kernel has no pids cgroup controller");
  HostileFleet h(Quotas{.pids = 16});
  auto f = h.run("fork-bomb");
  INFO(f.describe());
  CHECK(f.output.find("CONTAINED: fork #") != std::string::npos);
  CHECK(f.output.find("EAGAIN") != std::string::npos);
  CHECK(f.state == "failed");
  CHECK(f.error_code() == "PIDS_LIMIT");
}

TEST_CASE("a memory hog is killed by the memory quota and ends MEMORY_LIMIT", "[sandbox][hostile][limits]") {
  // Attack: map and touch memory 8 MiB at a time up to 1 GiB, with memoryMb: 64. Expected: the
  // task cgroup's memory.max OOM-kills it and the task ends MEMORY_LIMIT (not HANDLER_FAILED from
  // an RLIMIT_AS fallback).
  if (!host_has_cgroup_controller("memory")) SKIP_TEST("this kernel has no memory cgroup controller");
  HostileFleet h(Quotas{.memory_mb = 64});
  auto f = h.run("memory-hog");
  INFO(f.describe());
  CHECK(f.output.find("ESCAPED: ") == std::string::npos);
  CHECK(f.state == "failed");
  CHECK(f.error_code() == "MEMORY_LIMIT");
}

TEST_CASE("a CPU spinner is stopped by the CPU quota and ends CPU_LIMIT", "[sandbox][hostile][limits]") {
  // Attack: spin until 8 s of CPU time, with cpuMs: 500 and a 20 s timeout. Expected: RLIMIT_CPU
  // (1 s) sends SIGXCPU, then SIGKILL, and the task ends CPU_LIMIT, not TIMEOUT.
  HostileFleet h(Quotas{.cpu_ms = 500});
  auto f = h.run("cpu-spin");
  INFO(f.describe());
  CHECK(f.output.find("ESCAPED: ") == std::string::npos);
  CHECK(f.state == "failed");
  CHECK(f.error_code() == "CPU_LIMIT");
}

TEST_CASE("CPU spread over forked children is one budget for the whole task and ends CPU_LIMIT", "[sandbox][hostile][limits]") {
  // Attack: 4 children each spin 0.9 s of CPU, under a per-process RLIMIT_CPU of 1 s (cpuMs:
  // 1000), 3.6 s together. Expected: the task cgroup's CPU accounting (v2 cpu.stat, v1
  // cpuacct.usage) reaches cpuMs, the worker kills the whole cgroup and the task ends CPU_LIMIT
  // with about cpuMs used, not 3.6 s.
  if (!host_has_cgroup_controller("cpuacct") && !host_has_cgroup_v2_cpu_stat()) {
    SKIP_TEST("this host accounts no CPU per cgroup (no v1 cpuacct, no v2)");
  }
  HostileFleet h(Quotas{.cpu_ms = 1000});
  auto f = h.run("cpu-spin-forked");
  INFO(f.describe());
  CHECK(f.output.find("ESCAPED: ") == std::string::npos);
  CHECK(f.state == "failed");
  CHECK(f.error_code() == "CPU_LIMIT");
  const auto used = f.status["outcome"].value("cpu_ms", -1);
  CHECK(used >= 1000);
  CHECK(used < 3000);  // the budget, plus at most one check interval on each CPU
}

TEST_CASE("filling the workspace hits its size limit and ends DISK_LIMIT", "[sandbox][hostile][limits]") {
  // Attack: write out/fill.bin in 1 MiB blocks up to 1 GiB, then exit 1. Expected: the write
  // fails with ENOSPC at the workspace's size limit (quotas.diskMb: 64, a tmpfs), the host disk is
  // untouched, and the task ends DISK_LIMIT. memoryMb (256) is above diskMb, as workspace pages
  // count towards it.
  HostileFleet h;
  auto f = h.run("fill-disk", {{"mib", "1024"}});
  INFO(f.describe());
  CHECK(f.output.find("CONTAINED: write after") != std::string::npos);
  CHECK(f.state == "failed");
  CHECK(f.error_code() == "DISK_LIMIT");
}
