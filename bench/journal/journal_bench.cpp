// kbfleet-journal-bench: CPU time per task of the broker's journal alone (issue #6), in the
// pattern the broker writes it, without sockets or other processes (so the figure moves less
// with the machine's load than the dispatch benchmark's):
//   --per-commit K (32): each commit finishes K in-flight tasks (terminal update) and accepts
//     K new ones (insert, already running), as a loop turn at 64 credits per worker does;
//     128 tasks in flight. K = 1: one task in flight, its accept and its finish in separate
//     commits (the 1-in-flight path: two commits per task).
//   --tasks N (200000)  --dir DIR (a new temporary directory)
// Every 6400 tasks it checkpoints and compacts, as the broker's once-a-second timer does.
// Prints one JSON object: cpu_us_per_task (process CPU time), wall_us_per_task.
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <string>

#include "broker/journal/journal.hpp"

namespace {

using kbfleet::broker::Durability;
using kbfleet::broker::Journal;
using kbfleet::broker::TaskRecord;

double seconds(clockid_t clock) {
  timespec t{};
  clock_gettime(clock, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// Sizes as the noop benchmark's tasks have them.
TaskRecord accepted(long n) {
  TaskRecord r;
  char id[33];
  std::snprintf(id, sizeof id, "%016lx%016lx", static_cast<unsigned long>(n) * 0x9e3779b97f4a7c15UL,
                static_cast<unsigned long>(n));
  r.id = id;
  r.request = std::string(150, 'r');
  r.state = "running";
  r.attempt = 1;
  r.worker = "w-routing-id";
  r.worker_name = "worker-1";
  r.version = "1.0.0";
  r.submitted_ms = r.started_ms = 1000 + n;
  r.next_seq = 3;
  r.artifacts = std::string("\x81\xa9" "artifacts\x90", 12);
  return r;
}

void finish(TaskRecord& r, long now_ms) {
  r.state = "succeeded";
  r.worker.clear();
  r.finished_ms = now_ms;
  r.next_seq = 4;
  r.outcome = std::string(60, 'o');
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "kbfleet-journal-bench: %s failed\n", what);
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  long per_commit = 32, tasks = 200000;
  std::string dir;
  constexpr const char* kUsage = "usage: kbfleet-journal-bench [--per-commit K] [--tasks N] [--dir DIR]\n";
  for (int i = 1; i < argc; i += 2) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "kbfleet-journal-bench: %s needs a value\n%s", argv[i], kUsage);
      return 64;
    }
    if (std::strcmp(argv[i], "--per-commit") == 0) per_commit = std::atol(argv[i + 1]);
    else if (std::strcmp(argv[i], "--tasks") == 0) tasks = std::atol(argv[i + 1]);
    else if (std::strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
    else {
      std::fprintf(stderr, "kbfleet-journal-bench: unknown option %s\n%s", argv[i], kUsage);
      return 64;
    }
  }
  if (per_commit < 1 || tasks < 1) {
    std::fprintf(stderr, "kbfleet-journal-bench: --per-commit and --tasks must be positive integers\n%s", kUsage);
    return 64;
  }
  const bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/kbfleet-journal-bench.XXXXXX";
    check(mkdtemp(tmpl) != nullptr, "mkdtemp");
    dir = tmpl;
  }
  auto opened = Journal::open({dir + "/journal.db", Durability::kBatch, 0});
  check(opened.has_value(), "open");
  Journal& j = **opened;  // valid until the reset() below

  long n = 0;
  std::deque<TaskRecord> running;
  const long in_flight = per_commit == 1 ? 1 : 128;
  auto accept = [&] {
    TaskRecord r = accepted(++n);
    auto row = j.insert(r);
    check(row.has_value(), "insert");
    r.row = *row;
    running.push_back(std::move(r));
  };
  auto finish_oldest = [&] {
    TaskRecord r = std::move(running.front());
    running.pop_front();
    finish(r, 2000 + n);
    check(j.update(r).has_value(), "update");
  };
  for (long i = 0; i < in_flight; ++i) accept();
  check(j.commit().has_value(), "commit");

  const double cpu0 = seconds(CLOCK_PROCESS_CPUTIME_ID), wall0 = seconds(CLOCK_MONOTONIC);
  long done = 0, since_timer = 0;
  while (done < tasks) {
    if (per_commit == 1) {
      finish_oldest();
      check(j.commit().has_value(), "commit");
      accept();
      check(j.commit().has_value(), "commit");
    } else {
      for (long i = 0; i < per_commit; ++i) finish_oldest();
      for (long i = 0; i < per_commit; ++i) accept();
      check(j.commit().has_value(), "commit");
    }
    check(j.finish_checkpoint().has_value(), "checkpoint tail");  // as the broker does after each turn
    done += per_commit;
    if ((since_timer += per_commit) >= 6400) {
      since_timer = 0;
      check(j.checkpoint_passive().has_value(), "checkpoint");
      check(j.compact(2000 + n - 20000, 10000).has_value(), "compact");  // keeps the last 20000 finished
      check(j.commit().has_value(), "commit");
    }
  }
  const double cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall = seconds(CLOCK_MONOTONIC) - wall0;
  opened->reset();
  if (own_dir) {
    for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((dir + "/journal.db" + suffix).c_str());
    ::rmdir(dir.c_str());
  }
  std::printf("{\"per_commit\": %ld, \"tasks\": %ld, \"cpu_us_per_task\": %.2f, \"wall_us_per_task\": %.2f}\n", per_commit,
              done, cpu * 1e6 / static_cast<double>(done), wall * 1e6 / static_cast<double>(done));
  return 0;
}
