// kbfleet-broker: parses flags, starts the broker, prints the bound endpoints on stdout
// (one key=value per line, so scripts using port 0 can find them) and runs until SIGTERM/SIGINT.
#include <signal.h>

#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "broker/broker.hpp"
#include "common/log/log.hpp"
#include "common/posix/signals.hpp"
#include "common/posix/heap.hpp"

int main(int argc, char** argv) {
  kbfleet::posix::keep_freed_heap();  // artifact chunks reuse their memory (common/posix/heap.hpp)
  kbfleet::broker::BrokerOptions opt;
  std::string log_level = "info";
  std::string durability = "batch";
  CLI::App app{"kbfleet-broker: queues plugin tasks and dispatches them to kbfleet workers"};
  app.add_option("--bind", opt.bind, "ROUTER endpoint for clients and workers (port * = any free port)")
      ->capture_default_str();
  app.add_option("--events", opt.events, "XPUB endpoint where task events are published")->capture_default_str();
  app.add_option("--metrics", opt.metrics, "HOST:PORT for Prometheus /metrics (port 0 = any; empty = off)")
      ->capture_default_str();
  app.add_option("--data", opt.data_dir, "directory for artifacts (cas/) and the journal (journal.db)")->capture_default_str();
  app.add_option("--durability", durability,
                 "none: tasks in memory only; batch: journal (SQLite WAL) committed per loop turn, survives a broker "
                 "crash; fsync: also fsync each commit, survives power loss")
      ->check(CLI::IsMember({"none", "batch", "fsync"}))
      ->capture_default_str();
  app.add_option("--reattach-grace-ms", opt.reattach_grace_ms,
                 "after a restart, how long recovered running tasks wait for their worker (0 = 2 x liveness x heartbeat, at least 5000)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{3600000}))
      ->capture_default_str();
  app.add_option("--no-capable-worker-ms", opt.no_capable_worker_ms,
                 "how long a queued task waits while no connected worker can run its plugin (none offers it or grants "
                 "its capabilities) before it fails NO_CAPABLE_WORKER (0 = forever)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{30} * 24 * 3600 * 1000))
      ->capture_default_str();
  app.add_option("--heartbeat-ms", opt.heartbeat_ms, "heartbeat interval to workers")->check(CLI::Range(10, 60000))->capture_default_str();
  app.add_option("--liveness", opt.liveness, "missed heartbeats before a worker is declared lost")->check(CLI::Range(2, 100))->capture_default_str();
  app.add_option("--retention-ms", opt.retention_ms, "how long finished tasks and their events are kept")->check(CLI::Range(std::int64_t{0}, std::int64_t{30} * 24 * 3600 * 1000))->capture_default_str();
  app.add_option("--retention-max-tasks", opt.retention_max_tasks, "finished tasks kept at most (the oldest are forgotten first, before --retention-ms)")->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000000}))->capture_default_str();
  app.add_option("--max-queued", opt.max_queued, "queued tasks beyond which submissions get QUEUE_FULL")->check(CLI::Range(1, 100000000))->capture_default_str();
  app.add_option("--backlog-bytes", opt.backlog_bytes, "per-task event backlog kept for replay")->check(CLI::Range(std::int64_t{1024}, std::int64_t{1} << 32))->capture_default_str();
  app.add_option("--retry-backoff-ms", opt.retry_backoff_ms, "first retry delay after a lost worker (doubles per attempt, +-20% jitter)")->check(CLI::Range(std::int64_t{0}, std::int64_t{600000}))->capture_default_str();
  app.add_option("--auth", opt.auth_file,
                 "allow-list of CURVE public keys -> tenant and role (docs/security.md); with --curve-secret, every "
                 "endpoint requires CURVE; re-read on SIGHUP")
      ->check(CLI::ExistingFile);
  app.add_option("--curve-secret", opt.curve_secret, "the broker's secret certificate (`kbfleet keygen`, mode 0600)")
      ->check(CLI::ExistingFile);
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 64;  // EX_USAGE
  }
  opt.durability = *kbfleet::broker::parse_durability(durability);  // checked by IsMember above
  kbfleet::log::init("broker", log_level);

  auto stop = kbfleet::posix::signal_fd({SIGTERM, SIGINT});
  if (!stop) {
    std::cerr << "kbfleet-broker: " << stop.error().to_string() << "\n";
    return 71;  // EX_OSERR
  }

  // Blocked before the broker's zmq context starts its threads, which inherit the mask.
  auto hup = kbfleet::posix::signal_fd({SIGHUP});
  if (!hup) {
    std::cerr << "kbfleet-broker: " << hup.error().to_string() << "\n";
    return 71;  // EX_OSERR
  }

  auto broker = kbfleet::broker::Broker::create(opt);
  if (!broker) {
    std::cerr << "kbfleet-broker: " << broker.error().to_string() << "\n";
    return 78;  // EX_CONFIG
  }
  const auto& ep = (*broker)->endpoints();
  std::cout << "bind=" << ep.bind << "\nevents=" << ep.events << "\nmetrics=" << ep.metrics << std::endl;
  (*broker)->run(stop->get(), hup->get());
  return 0;
}
