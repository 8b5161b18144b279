// kbfleet-dispatch-bench: tasks/s, latency and broker CPU per task of kbfleet's dispatch path
// (real kbfleet-broker and kbfleet-worker processes, workers offering the built-in noop handler)
// or of a minimal ZeroMQ load-balancing broker (baseline.hpp) driven by the same load generator
// (load.hpp) with the same workers, window and request bytes. One run of one system per call;
// bench/run interleaves the calls and computes the ratios. Prints one JSON object on stdout.
//
// Flags: see kUsage below (`--help` prints it).
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "bench/dispatch/baseline.hpp"
#include "bench/dispatch/events_load.hpp"
#include "bench/dispatch/load.hpp"
#include "bench/dispatch/proc.hpp"
#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"
#include "common/transport/frames.hpp"

namespace {

using namespace kbfleet::bench;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string system = "kbfleet";
  int workers = 2;
  int credits = 1;
  int window = 0;
  double seconds = 3;
  double warmup = 0.5;
  int input_bytes = 16;
  std::string durability = "none";
  std::string bin;
  long long queued = 0;
  long long events_lines = 0;
  int subscribers = 10;
  std::string plugins, plugin = "kbfleet.noop", handler = "noop";
};

constexpr const char* kUsage =
    "usage: kbfleet-dispatch-bench [options]   (prints one JSON object)\n"
    "  --system kbfleet|baseline  (kbfleet)    --workers N (2)\n"
    "  --credits C (1: one task in flight per worker; kbfleet --slots C)\n"
    "  --window W (0 = workers x credits)    --seconds S (3)    --warmup S (0.5)\n"
    "  --input-bytes B (16)    --durability none|batch|fsync (none)\n"
    "  --bin DIR (kbfleet-broker and kbfleet-worker; default: next to this program)\n"
    "  --queued Q   before the workers start, queue Q tasks at priority 0 and run the measured\n"
    "               ones at priority 1, so Q tasks stay queued throughout (use a window above\n"
    "               workers x credits); also reports the broker's resident bytes per queued task\n"
    "  --plugins DIR --plugin ID --handler H   a real plugin instead of the noop (end to end)\n"
    "  --events-lines N --subscribers K (10)   one task of --plugin/--handler writing N lines,\n"
    "               then K subscribers that fill their gaps by replay\n";

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "kbfleet-dispatch-bench: %s\n%s", why.c_str(), kUsage);
  std::exit(64);
}

// A failure of the run itself (not of the command line): no usage text, exit 1.
[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "kbfleet-dispatch-bench: %s\n", why.c_str());
  std::exit(1);
}

// A whole decimal number, or exit 64 naming the flag (atoi would read "x" as 0).
long long whole(const std::string& flag, const std::string& v) {
  long long n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) usage(flag + " needs a whole number, not '" + v + "'");
  return n;
}

double decimal(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') usage(flag + " needs a number, not '" + v + "'");
  return d;
}

Options parse(int argc, char** argv) {
  Options o;
  o.bin = fs::read_symlink("/proc/self/exe").parent_path().string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) usage("missing value for " + a);
    std::string v = argv[++i];
    if (a == "--system") o.system = v;
    else if (a == "--workers") o.workers = static_cast<int>(whole(a, v));
    else if (a == "--credits") o.credits = static_cast<int>(whole(a, v));
    else if (a == "--window") o.window = static_cast<int>(whole(a, v));
    else if (a == "--seconds") o.seconds = decimal(a, v);
    else if (a == "--warmup") o.warmup = decimal(a, v);
    else if (a == "--input-bytes") o.input_bytes = static_cast<int>(whole(a, v));
    else if (a == "--durability") o.durability = v;
    else if (a == "--bin") o.bin = v;
    else if (a == "--queued") o.queued = whole(a, v);
    else if (a == "--plugins") o.plugins = v;
    else if (a == "--events-lines") o.events_lines = whole(a, v);
    else if (a == "--subscribers") o.subscribers = static_cast<int>(whole(a, v));
    else if (a == "--plugin") o.plugin = v;
    else if (a == "--handler") o.handler = v;
    else usage("unknown option " + a);
  }
  if (o.system != "kbfleet" && o.system != "baseline") usage("--system is kbfleet or baseline");
  if (o.durability != "none" && o.durability != "batch" && o.durability != "fsync") {
    usage("--durability is none, batch or fsync");
  }
  if (o.workers < 0 || o.workers > 64 || o.credits < 1 || o.credits > 4096) usage("--workers is 0-64, --credits 1-4096");
  if (o.seconds <= 0 || o.warmup < 0) usage("--seconds must be above 0 and --warmup at least 0");
  if (o.window < 0 || o.queued < 0 || o.input_bytes < 0 || o.events_lines < 0 || o.subscribers < 1) {
    usage("--window, --queued, --input-bytes and --events-lines cannot be negative; --subscribers is at least 1");
  }
  if (o.window == 0) o.window = o.workers * o.credits;
  return o;
}

// A fresh directory outside /tmp (a sandboxing worker refuses a --work under /tmp).
fs::path make_scratch() {
  char tmpl[] = "/var/tmp/kbfleet-dispatch-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) fail("cannot create a directory under /var/tmp");
  return tmpl;
}

std::string msgpack_str(int n) {
  kbfleet::protocol::Writer w;
  w.str(std::string(static_cast<std::size_t>(n), 'x'));
  return w.take();
}

// One request/reply on the broker's ROUTER; returns the reply body's integer `key` or -1.
long long ask(zmq::socket_t& dealer, std::string_view type, const std::string& key) {
  static long long req = 0;
  ++req;
  kbfleet::protocol::Writer w;
  w.begin_map().kv("req", static_cast<std::int64_t>(req)).end_map();
  kbfleet::transport::send_message(dealer, "", type, w.take());
  kbfleet::transport::Incoming in;
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < until) {
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(50));
    while (kbfleet::transport::recv_message(dealer, kbfleet::transport::SocketKind::kDealer, in)) {
      if (in.req == req && in.body) return in.body->view().i64_or(key, -1);
    }
  }
  return -1;
}

// CPU seconds of the broker and of all workers over the measured interval, read by the load
// generator's start/end hooks. Lives as long as the load run it is attached to.
class CpuMeter {
 public:
  CpuMeter(const Child& broker, const std::vector<Child>& workers, LoadSpec& spec) : broker_(broker), workers_(workers) {
    spec.on_measure_start = [this] { read(b0_, w0_); };
    spec.on_measure_end = [this] { read(b1_, w1_); };
  }
  double broker_s() const { return b1_ - b0_; }
  double workers_s() const { return w1_ - w0_; }

 private:
  void read(double& b, double& w) const {
    b = cpu_seconds(broker_.pid());
    w = 0;
    for (const auto& c : workers_) w += cpu_seconds(c.pid());
  }
  const Child& broker_;
  const std::vector<Child>& workers_;
  double b0_ = 0, b1_ = 0, w0_ = 0, w1_ = 0;
};

bool wait_for_workers(const std::string& router, int n) {
  zmq::context_t ctx(1);
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::linger, 0);
  d.connect(router);
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < until) {
    if (ask(d, kbfleet::protocol::msg::kInfo, "workers") >= n) return true;
    ::usleep(50000);  // polling the broker's state; not synchronisation of the measurement
  }
  return false;
}

// Submits `n` tasks pipelined (1000 in flight) and waits for every acknowledgement.
long long fill_queue(const std::string& router, const LoadSpec& spec, long long n) {
  zmq::context_t ctx(1);
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::sndhwm, 0);
  d.set(zmq::sockopt::rcvhwm, 0);
  d.connect(router);
  long long sent = 0, acked = 0, refused = 0;
  kbfleet::transport::Incoming in;
  auto last = Clock::now();
  while (acked + refused < n && Clock::now() - last < std::chrono::seconds(10)) {
    while (sent < n && sent - acked - refused < 1000) {
      kbfleet::transport::send_message(d, "", kbfleet::protocol::msg::kSubmit, submit_body(spec, sent + 1));
      ++sent;
    }
    zmq::pollitem_t items[] = {{d.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(100));
    while (kbfleet::transport::recv_message(d, kbfleet::transport::SocketKind::kDealer, in)) {
      (in.type == kbfleet::protocol::msg::kSubmitted ? acked : refused)++;
      last = Clock::now();
    }
  }
  return refused > 0 ? -refused : acked;
}

void print_result(const Options& o, const LoadResult& r, double broker_cpu_s, double workers_cpu_s,
                  long long broker_rss, long long queued_bytes) {
  const double per_task = r.completed > 0 ? broker_cpu_s * 1e6 / static_cast<double>(r.completed) : 0;
  std::string err;
  for (char c : r.first_error) err += (c == '"' || c == '\\') ? ' ' : c;
  std::printf(
      "{\"system\": \"%s\", \"workers\": %d, \"credits\": %d, \"window\": %d, \"queued\": %lld, \"durability\": "
      "\"%s\", \"plugin\": \"%s\", \"seconds\": %.3f, \"completed\": %lld, \"tasks_per_s\": %.1f, \"p50_us\": %.1f, "
      "\"p99_us\": %.1f, \"p90_us\": %.1f, \"p999_us\": %.1f, \"broker_cpu_s\": %.3f, \"broker_cpu_us_per_task\": %.2f, \"workers_cpu_s\": %.3f, "
      "\"client_cpu_s\": %.3f, \"broker_rss_bytes\": %lld, \"request_bytes\": %lld, \"lost\": %lld, \"refused\": "
      "%lld, \"queued_rss_bytes\": %lld, \"queued_bytes_per_task\": %.1f, \"input_bytes\": %lld, \"error\": \"%s\"}\n",
      o.system.c_str(), o.workers, o.credits, o.window, o.queued, o.durability.c_str(), o.plugin.c_str(), r.seconds,
      static_cast<long long>(r.completed), r.tasks_per_s, r.p50_us, r.p99_us, r.p90_us, r.p999_us, broker_cpu_s, per_task, workers_cpu_s,
      r.client_cpu_s, broker_rss, static_cast<long long>(r.request_bytes), static_cast<long long>(r.lost),
      static_cast<long long>(r.refused), queued_bytes,
      o.queued > 0 ? static_cast<double>(queued_bytes) / static_cast<double>(o.queued) : 0.0,
      static_cast<long long>(o.input_bytes), err.c_str());
}

int run_baseline(const Options& o, LoadSpec spec) {
  Child broker = spawn_function([] { return run_baseline_broker(); });
  auto ep = broker.read_keys({"frontend", "backend"}, std::chrono::seconds(10));
  if (ep.size() != 2) fail("the baseline broker did not start");
  std::vector<Child> workers;
  for (int i = 0; i < o.workers; ++i) {
    const std::string backend = ep["backend"];
    const int credits = o.credits;
    workers.push_back(spawn_function([backend, credits] { return run_baseline_worker(backend, credits); }));
  }
  CpuMeter cpu(broker, workers, spec);
  auto r = run_baseline_load(ep["frontend"], spec);
  print_result(o, r, cpu.broker_s(), cpu.workers_s(), rss_bytes(broker.pid()), 0);
  return r.completed > 0 ? 0 : 1;
}

int run_kbfleet(const Options& o, LoadSpec spec) {
  const fs::path scratch = make_scratch();
  const std::string log = (scratch / "log.txt").string();
  fs::create_directories(scratch / "plugins");
  Child broker = spawn_exec({o.bin + "/kbfleet-broker", "--bind", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                             "--metrics", "", "--data", (scratch / "data").string(), "--durability", o.durability,
                             "--max-queued", std::to_string(o.queued + 2 * o.window + 1000), "--backlog-bytes",
                             o.events_lines > 0 ? "268435456" : "16777216", "--log-level", "warn"},
                            log);
  auto ep = broker.read_keys({"bind", "events"}, std::chrono::seconds(10));
  if (ep.size() != 2) fail("the broker did not start; see " + log);
  int rc = 0;
  long long queued_bytes = 0;
  if (o.queued > 0) {  // before any worker connects, so every one of them stays queued
    LoadSpec behind = spec;
    behind.priority = 0;  // the measured tasks run at priority 1, ahead of these
    const long long before = rss_bytes(broker.pid());
    const long long acked = fill_queue(ep["bind"], behind, o.queued);
    if (acked != o.queued) fail("filling the queue failed; see " + log);
    queued_bytes = rss_bytes(broker.pid()) - before;
    spec.priority = 1;
  }
  {
    std::vector<Child> workers;
    const std::string plugins = o.plugins.empty() ? (scratch / "plugins").string() : o.plugins;
    for (int i = 0; i < o.workers; ++i) {
      workers.push_back(spawn_exec({o.bin + "/kbfleet-worker", "--broker", ep["bind"], "--plugins", plugins, "--work",
                                    (scratch / ("work-" + std::to_string(i))).string(), "--slots",
                                    std::to_string(o.credits), "--builtin-noop", "--metrics", "", "--worker-id",
                                    "bench-w" + std::to_string(i), "--log-level", "warn"},
                                   log));
    }
    if (!wait_for_workers(ep["bind"], o.workers)) fail("the workers did not register; see " + log);
    if (o.events_lines > 0) {
      EventsSpec es{o.plugin, o.handler, o.subscribers, o.events_lines};
      const double b0 = cpu_seconds(broker.pid());
      auto r = run_events_load(ep["bind"], ep["events"], es);
      std::printf("{\"system\": \"kbfleet\", \"lines\": %lld, \"subscribers\": %d, \"seconds\": %.3f, "
                  "\"lines_per_s\": %.1f, \"live\": %lld, \"replayed\": %lld, \"output_events\": %lld, "
                  "\"complete\": %s, \"broker_cpu_s\": %.3f, \"broker_rss_bytes\": %lld, \"error\": \"%s\"}\n",
                  o.events_lines, o.subscribers, r.seconds, r.lines_per_s, static_cast<long long>(r.live),
                  static_cast<long long>(r.replayed), static_cast<long long>(r.output_events),
                  r.complete ? "true" : "false", cpu_seconds(broker.pid()) - b0, rss_bytes(broker.pid()),
                  r.error.c_str());
      workers.clear();
      broker.stop();
      std::error_code ec;
      fs::remove_all(scratch, ec);
      return r.complete ? 0 : 1;
    }
    CpuMeter cpu(broker, workers, spec);
    auto r = run_kbfleet_load(ep["bind"], ep["events"], spec);
    print_result(o, r, cpu.broker_s(), cpu.workers_s(), rss_bytes(broker.pid()), queued_bytes);
    rc = r.completed > 0 ? 0 : 1;
    workers.clear();
  }
  broker.stop();
  std::error_code ec;
  fs::remove_all(scratch, ec);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  LoadSpec spec;
  spec.window = o.window;
  spec.seconds = o.seconds;
  spec.warmup_s = o.warmup;
  spec.plugin = o.plugin;
  spec.handler = o.handler;
  if (o.input_bytes > 0) spec.input = msgpack_str(o.input_bytes);
  return o.system == "baseline" ? run_baseline(o, spec) : run_kbfleet(o, spec);
}
