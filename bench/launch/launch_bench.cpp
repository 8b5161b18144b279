// kbfleet-launch-bench: the baseline of the end-to-end benchmark (issue #6, scenario 4): the
// launcher a worker runs per task, in local loops, without broker or client. Each loop is a
// process of its own, as each worker is, doing what a one-slot worker does per sandboxed task
// (launch_loop.hpp); bench/run compares the fleet's tasks/s through as many one-slot workers
// against this with as many loops. Prints one JSON object on stdout (and to --json FILE):
// loops, seconds, completed, failed, tasks_per_s, p50_us, p99_us (per attempt, start to
// retired), error.
//
// Usage (root: every sandbox layer):
//   kbfleet-launch-bench [--loops N] [--seconds S] [--warmup S] [--plugins DIR --plugin ID --handler H] [--json FILE]
// Without --plugins it runs the static `true` (kbfleet-bench-true next to this program) as the
// plugin bench/run's e2e scenario uses: `benchtrue`, handler `true`, `net: none`.
// Exit: 0; 1 an attempt failed or none completed; 64 bad flags; 69 a sandbox layer is missing.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "bench/launch/launch_loop.hpp"

namespace {

using namespace kbfleet::bench;
namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: kbfleet-launch-bench [--loops N] [--seconds S] [--warmup S] [--plugins DIR --plugin ID --handler H] "
    "[--json FILE]\n";

struct Options {
  int loops = 2;
  double seconds = 3, warmup = 0.5;
  std::string plugins, plugin = "benchtrue", handler = "true", json;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "kbfleet-launch-bench: %s\n%s", why.c_str(), kUsage);
  std::exit(64);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) usage(a + " needs a value");
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--loops") {
      o.loops = static_cast<int>(std::strtol(v.c_str(), &end, 10));
    } else if (a == "--seconds") {
      o.seconds = std::strtod(v.c_str(), &end);
    } else if (a == "--warmup") {
      o.warmup = std::strtod(v.c_str(), &end);
    } else if (a == "--plugins") {
      o.plugins = v;
    } else if (a == "--plugin") {
      o.plugin = v;
    } else if (a == "--handler") {
      o.handler = v;
    } else if (a == "--json") {
      o.json = v;
    } else {
      usage("unknown option " + a);
    }
    if (end != nullptr && (*end != '\0' || v.empty())) usage(a + " takes a number, not '" + v + "'");
  }
  if (o.loops < 1 || o.loops > 64) usage("--loops must be 1..64");
  if (!(o.seconds > 0) || !(o.warmup >= 0)) usage("--seconds must be positive and --warmup not negative");
  return o;
}

// The benchtrue plugin of bench/run (make_true_plugin): a static binary that exits 0, `net: none`.
fs::path make_true_plugin(const fs::path& scratch, const fs::path& bin) {
  const fs::path root = scratch / "plugins" / "benchtrue";
  fs::create_directories(root / "bin");
  fs::copy_file(bin / "kbfleet-bench-true", root / "bin" / "true");
  std::ofstream(root / "kbfleet.yaml") << "# kbfleet-launch-bench: the smallest sandboxed task\n"
                                          "id: benchtrue\nversion: 1.0.0\nhandlers:\n"
                                          "  true: { exec: bin/true, idempotent: true }\n"
                                          "permissions:\n  net: none\n";
  for (const auto& p : {scratch / "plugins", root, root / "bin"}) {
    fs::permissions(p, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                           fs::perms::others_exec);
  }
  return scratch / "plugins";
}

// A loop's result through a file: "completed failed layers_missing", the error line, then one
// latency per line.
void write_result(const fs::path& file, const LoopResult& r) {
  std::ofstream f(file);
  f << r.completed << ' ' << r.failed << ' ' << (r.layers_missing ? 1 : 0) << '\n' << r.first_error << '\n';
  for (double us : r.latency_us) f << us << '\n';
}

LoopResult read_result(const fs::path& file) {
  LoopResult r;
  std::ifstream f(file);
  int missing = 0;
  if (!(f >> r.completed >> r.failed >> missing)) {
    r.first_error = "a loop process ended without a result";
    r.failed = 1;
    return r;
  }
  r.layers_missing = missing != 0;
  f.ignore(1);
  std::getline(f, r.first_error);
  for (double us; f >> us;) r.latency_us.push_back(us);
  return r;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c == '\n' || c == '\t') ? ' ' : c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);  // as bench/run starts the fleet's workers (--log-level warn)
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  char tmpl[] = "/var/tmp/kbfleet-launch-bench-XXXXXX";  // not /tmp: a sandboxing worker refuses it
  if (::mkdtemp(tmpl) == nullptr) usage("cannot create a directory under /var/tmp");
  const fs::path scratch = tmpl;
  fs::permissions(scratch, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  const fs::path plugins = o.plugins.empty() ? make_true_plugin(scratch, bin) : fs::path(o.plugins);

  // Each loop probes and then waits on `go`, so that they all start measuring together.
  int ready[2], go[2];
  if (::pipe(ready) < 0 || ::pipe(go) < 0) usage("pipe failed");
  std::vector<pid_t> pids;
  for (int i = 0; i < o.loops; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      ::close(go[1]);
      LoopSpec spec{plugins, o.plugin, o.handler, scratch / ("work-" + std::to_string(i)), bin / "kbfleet-init", i,
                    o.warmup, o.seconds};
      auto r = run_launch_loop(spec, [&] {
        char c = 'r';
        (void)!::write(ready[1], &c, 1);
        (void)!::read(go[0], &c, 1);
      });
      write_result(scratch / ("result-" + std::to_string(i)), r);
      ::_exit(0);
    }
    if (pid < 0) usage("fork failed");
    pids.push_back(pid);
  }
  ::close(ready[1]);
  ::close(go[0]);
  char c;
  for (int i = 0; i < o.loops && ::read(ready[0], &c, 1) == 1; ++i) {
  }
  const std::string go_bytes(static_cast<std::size_t>(o.loops), 'g');
  (void)!::write(go[1], go_bytes.data(), go_bytes.size());
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }

  std::int64_t completed = 0, failed = 0;
  bool missing = false;
  std::string error;
  std::vector<double> latency;
  for (int i = 0; i < o.loops; ++i) {
    LoopResult r = read_result(scratch / ("result-" + std::to_string(i)));
    completed += r.completed;
    failed += r.failed;
    missing = missing || r.layers_missing;
    if (error.empty()) error = r.first_error;
    latency.insert(latency.end(), r.latency_us.begin(), r.latency_us.end());
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);

  char line[1024];
  std::snprintf(line, sizeof line,
                "{\"loops\": %d, \"seconds\": %.3f, \"completed\": %lld, \"failed\": %lld, \"tasks_per_s\": %.1f, "
                "\"p50_us\": %.1f, \"p99_us\": %.1f, \"error\": \"%s\"}\n",
                o.loops, o.seconds, static_cast<long long>(completed), static_cast<long long>(failed),
                static_cast<double>(completed) / o.seconds, percentile(latency, 0.5), percentile(latency, 0.99),
                json_escape(error).substr(0, 600).c_str());
  std::fputs(line, stdout);
  if (!o.json.empty()) std::ofstream(o.json) << line;
  if (missing) {
    std::fprintf(stderr, "kbfleet-launch-bench: %s\n", error.c_str());
    return 69;
  }
  if (!error.empty()) std::fprintf(stderr, "kbfleet-launch-bench: %s\n", error.c_str());
  return completed > 0 && failed == 0 ? 0 : 1;
}
