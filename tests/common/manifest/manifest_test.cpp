#include "common/manifest/manifest.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace kbfleet::manifest {
namespace {

const std::string kHead = "id: hello\nversion: 1.0.0\n";
const std::string kHandlers = "handlers:\n  greet: { exec: bin/greet.sh }\n";

// A minimal valid manifest followed by `extra` top-level YAML.
std::string with(const std::string& extra) { return kHead + kHandlers + extra; }

// Parses `yaml`, requires MANIFEST_INVALID naming `field`, returns the message users see.
std::string invalid_message(const std::string& yaml, const std::string& field) {
  auto m = parse_manifest(yaml);
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().code == ErrorCode::kManifestInvalid);
  CHECK(m.error().details.at("field") == field);
  CHECK(m.error().message.rfind(field + ": ", 0) == 0);
  return m.error().message;
}

TEST_CASE("the manifest from the issue parses into typed values", "[manifest]") {
  auto m = parse_manifest(R"(
id: hello                      # comment
version: 1.0.0
capabilities: [linux]
handlers:
  greet: { exec: bin/greet.sh, args: ["--loud"], idempotent: true }
permissions:
  env: [LANG, "CI_*"]
  fs: { read: ["data/**"], write: ["out/**"] }
  net: none
  quotas: { timeoutMs: 30000, memoryMb: 256, cpuMs: 10000, pids: 64, outputBytes: 8388608 }
artifacts:
  - { id: report, path: "out/report-{taskId}.txt", contentType: text/plain }
sandbox: process
)");
  REQUIRE(m.has_value());
  CHECK(m->id == "hello");
  CHECK(m->version == "1.0.0");
  CHECK(m->capabilities == std::vector<std::string>{"linux"});
  REQUIRE(m->handlers.size() == 1);
  const Handler& h = m->handlers.at("greet");
  CHECK(h.name == "greet");
  CHECK(h.exec == "bin/greet.sh");
  CHECK(h.args == std::vector<std::string>{"--loud"});
  CHECK(h.idempotent);
  CHECK(m->env == std::vector<std::string>{"LANG", "CI_*"});
  CHECK(m->fs.read == std::vector<std::string>{"data/**"});
  CHECK(m->fs.write == std::vector<std::string>{"out/**"});
  CHECK(m->net.none);
  CHECK(m->net.allow.empty());
  CHECK(m->quotas.timeout_ms == 30000);
  CHECK(m->quotas.memory_mb == 256);
  CHECK(m->quotas.cpu_ms == 10000);
  CHECK(m->quotas.pids == 64);
  CHECK(m->quotas.output_bytes == 8388608);
  REQUIRE(m->artifacts.size() == 1);
  CHECK(m->artifacts[0].id == "report");
  CHECK(m->artifacts[0].path == "out/report-{taskId}.txt");
  CHECK(m->artifacts[0].content_type == "text/plain");
  CHECK(m->sandbox == SandboxMode::kProcess);
}

TEST_CASE("a manifest without permissions gets the documented defaults", "[manifest]") {
  auto m = parse_manifest(with(""));
  REQUIRE(m.has_value());
  CHECK(m->capabilities.empty());
  CHECK(m->handlers.at("greet").args.empty());
  CHECK_FALSE(m->handlers.at("greet").idempotent);
  CHECK(m->env.empty());
  CHECK(m->fs.read.empty());
  CHECK(m->fs.write.empty());
  CHECK(m->net.none);
  CHECK(m->quotas.timeout_ms == 30000);
  CHECK(m->quotas.memory_mb == 256);
  CHECK(m->quotas.cpu_ms == 10000);
  CHECK(m->quotas.pids == 64);
  CHECK(m->quotas.output_bytes == 8 << 20);
  CHECK(m->quotas.disk_mb == 512);
  CHECK(m->artifacts.empty());
  CHECK(m->sandbox == SandboxMode::kProcess);

  SECTION("quotas given in part keep the defaults for the rest") {
    auto p = parse_manifest(with("permissions: { quotas: { timeoutMs: 1500 } }\n"));
    REQUIRE(p.has_value());
    CHECK(p->quotas.timeout_ms == 1500);
    CHECK(p->quotas.memory_mb == 256);
  }
  SECTION("an explicit null reads as absent") {
    auto p = parse_manifest(with("permissions:\ncapabilities: ~\n"));
    REQUIRE(p.has_value());
    CHECK(p->quotas.pids == 64);
  }
}

TEST_CASE("id and version are required and must be well formed", "[manifest]") {
  SECTION("missing id") {
    CHECK(invalid_message("version: 1.0.0\n" + kHandlers, "id") == "id: is required, e.g. id: hello");
  }
  SECTION("empty id") { CHECK(invalid_message("id: ''\nversion: 1.0.0\n" + kHandlers, "id") == "id: is required, e.g. id: hello"); }
  SECTION("uppercase id") {
    CHECK(invalid_message("id: Hello\nversion: 1.0.0\n" + kHandlers, "id") ==
          "id: 'Hello' is not a valid id; use lowercase letters, digits, '.', '_' and '-', starting with a letter "
          "or digit (at most 64 characters)");
  }
  SECTION("id longer than 64 characters") {
    invalid_message("id: " + std::string(65, 'a') + "\nversion: 1.0.0\n" + kHandlers, "id");
  }
  SECTION("id that is a map") { CHECK(invalid_message("id: {a: 1}\nversion: 1.0.0\n" + kHandlers, "id") == "id: must be a string"); }
  SECTION("missing version") {
    CHECK(invalid_message("id: hello\n" + kHandlers, "version") == "version: is required, e.g. version: 1.0.0");
  }
  SECTION("version with a space") {
    CHECK(invalid_message("id: hello\nversion: 1 0\n" + kHandlers, "version") ==
          "version: '1 0' is not a valid version; use letters, digits, '.', '+' and '-' (at most 64 characters), "
          "e.g. 1.0.0");
  }
  SECTION("version longer than 64 characters") {
    invalid_message("id: hello\nversion: " + std::string(65, '1') + "\n" + kHandlers, "version");
  }
  SECTION("semver with pre-release and build metadata is accepted") {
    auto m = parse_manifest("id: a1.b_c-d\nversion: 2.0.0-rc.1+build5\n" + kHandlers);
    REQUIRE(m.has_value());
    CHECK(m->version == "2.0.0-rc.1+build5");
  }
}

TEST_CASE("unknown keys are rejected naming the key so typos are not ignored", "[manifest]") {
  SECTION("top level") {
    CHECK(invalid_message(with("handler: {}\n"), "handler") ==
          "handler: unknown key; expected one of id, version, capabilities, handlers, permissions, artifacts, "
          "sandbox");
  }
  SECTION("handler") {
    CHECK(invalid_message(kHead + "handlers: { greet: { exce: bin/greet.sh } }\n", "handlers.greet.exce") ==
          "handlers.greet.exce: unknown key; expected one of exec, args, idempotent");
  }
  SECTION("permissions") {
    CHECK(invalid_message(with("permissions: { nett: none }\n"), "permissions.nett") ==
          "permissions.nett: unknown key; expected one of env, fs, net, quotas");
  }
  SECTION("quotas") {
    CHECK(invalid_message(with("permissions: { quotas: { timeout: 5 } }\n"), "permissions.quotas.timeout") ==
          "permissions.quotas.timeout: unknown key; expected one of timeoutMs, memoryMb, cpuMs, pids, outputBytes, diskMb");
  }
  SECTION("fs") {
    CHECK(invalid_message(with("permissions: { fs: { raed: [a] } }\n"), "permissions.fs.raed") ==
          "permissions.fs.raed: unknown key; expected one of read, write");
  }
  SECTION("net") {
    CHECK(invalid_message(with("permissions: { net: { deny: [a] } }\n"), "permissions.net.deny") ==
          "permissions.net.deny: unknown key; expected one of allow");
  }
  SECTION("artifact") {
    CHECK(invalid_message(with("artifacts: [{ id: r, path: out/r, content_type: text/plain }]\n"),
                          "artifacts[0].content_type") ==
          "artifacts[0].content_type: unknown key; expected one of id, path, contentType");
  }
}

TEST_CASE("a key given twice is rejected instead of one value winning", "[manifest]") {
  CHECK(invalid_message(kHead + "handlers:\n  greet: { exec: a.sh }\n  greet: { exec: b.sh }\n", "handlers.greet") ==
        "handlers.greet: duplicate key");
  CHECK(invalid_message(with("id: other\n"), "id") == "id: duplicate key");
}

TEST_CASE("handlers need a valid name and a relative exec inside the plugin", "[manifest]") {
  SECTION("no handlers key") {
    CHECK(invalid_message(kHead, "handlers") ==
          "handlers: at least one handler is required, e.g. handlers: { greet: { exec: bin/greet.sh } }");
  }
  SECTION("an empty handlers map") { invalid_message(kHead + "handlers: {}\n", "handlers"); }
  SECTION("handlers as a list") {
    CHECK(invalid_message(kHead + "handlers: [greet]\n", "handlers") ==
          "handlers: must be a map of handler name to { exec, args }");
  }
  SECTION("an invalid handler name") {
    CHECK(invalid_message(kHead + "handlers: { Greet: { exec: a.sh } }\n", "handlers.Greet") ==
          "handlers.Greet: 'Greet' is not a valid handler name; use lowercase letters, digits, '.', '_' and '-', "
          "starting with a letter or digit (at most 64 characters)");
  }
  SECTION("a handler given as a bare string") {
    CHECK(invalid_message(kHead + "handlers: { greet: bin/greet.sh }\n", "handlers.greet") ==
          "handlers.greet: must be a map with exec, e.g. { exec: bin/greet.sh }");
  }
  SECTION("exec missing") {
    CHECK(invalid_message(kHead + "handlers: { greet: { args: [a] } }\n", "handlers.greet.exec") ==
          "handlers.greet.exec: is required, e.g. exec: bin/greet.sh");
  }
  const std::string rule = "must be a relative path inside the plugin, e.g. bin/greet.sh";
  SECTION("exec absolute") {
    CHECK(invalid_message(kHead + "handlers: { greet: { exec: /bin/sh } }\n", "handlers.greet.exec") ==
          "handlers.greet.exec: " + rule);
  }
  SECTION("exec escaping with ..") {
    CHECK(invalid_message(kHead + "handlers: { run: { exec: ../escape.sh } }\n", "handlers.run.exec") ==
          "handlers.run.exec: " + rule);
  }
  SECTION("exec with .. in the middle") {
    invalid_message(kHead + "handlers: { greet: { exec: bin/../../x } }\n", "handlers.greet.exec");
  }
  SECTION("exec empty") { invalid_message(kHead + "handlers: { greet: { exec: '' } }\n", "handlers.greet.exec"); }
  SECTION("exec a list") {
    CHECK(invalid_message(kHead + "handlers: { greet: { exec: [a] } }\n", "handlers.greet.exec") ==
          "handlers.greet.exec: must be a string");
  }
  SECTION("args not a list") {
    CHECK(invalid_message(kHead + "handlers: { greet: { exec: a.sh, args: --loud } }\n", "handlers.greet.args") ==
          "handlers.greet.args: must be a list of strings");
  }
  SECTION("an arg that is a map") {
    CHECK(invalid_message(kHead + "handlers: { greet: { exec: a.sh, args: [ok, {a: 1}] } }\n",
                          "handlers.greet.args[1]") == "handlers.greet.args[1]: must be a string");
  }
  SECTION("idempotent not a boolean") {
    CHECK(invalid_message(kHead + "handlers: { greet: { exec: a.sh, idempotent: maybe } }\n",
                          "handlers.greet.idempotent") == "handlers.greet.idempotent: must be true or false");
  }
  SECTION("several handlers with numbers and dots in names") {
    auto m = parse_manifest(kHead + "handlers:\n  a.b: { exec: ./x }\n  v2: { exec: bin/v2, idempotent: false }\n");
    REQUIRE(m.has_value());
    CHECK(m->handlers.size() == 2);
    CHECK(m->handlers.at("a.b").exec == "./x");
  }
}

TEST_CASE("capabilities are a list of non-empty strings", "[manifest]") {
  CHECK(invalid_message(with("capabilities: gpu\n"), "capabilities") == "capabilities: must be a list of strings");
  CHECK(invalid_message(with("capabilities: [gpu, '']\n"), "capabilities[1]") ==
        "capabilities[1]: must be a non-empty string");
  CHECK(invalid_message(with("capabilities: [[gpu]]\n"), "capabilities[0]") == "capabilities[0]: must be a string");
}

TEST_CASE("env permissions accept NAME and PREFIX_* and reserve KBFLEET_*", "[manifest]") {
  const std::string pattern_rule = " is not a variable name or prefix pattern; use NAME or PREFIX_* (e.g. LANG, CI_*)";
  SECTION("names and prefix patterns are accepted") {
    auto m = parse_manifest(with("permissions: { env: [LANG, _X, lc_all, CI_*, _*] }\n"));
    REQUIRE(m.has_value());
    CHECK(m->env.size() == 5);
  }
  SECTION("a star without an underscore") {
    CHECK(invalid_message(with("permissions: { env: [LANG, 'CI*'] }\n"), "permissions.env[1]") ==
          "permissions.env[1]: 'CI*'" + pattern_rule);
  }
  SECTION("a bare star") { invalid_message(with("permissions: { env: ['*'] }\n"), "permissions.env[0]"); }
  SECTION("a name starting with a digit") { invalid_message(with("permissions: { env: [1ABC] }\n"), "permissions.env[0]"); }
  SECTION("a name with '='") { invalid_message(with("permissions: { env: ['A=B'] }\n"), "permissions.env[0]"); }
  SECTION("a KBFLEET_ name") {
    CHECK(invalid_message(with("permissions: { env: [KBFLEET_TOKEN] }\n"), "permissions.env[0]") ==
          "permissions.env[0]: 'KBFLEET_TOKEN' is reserved: KBFLEET_* variables are set by the worker");
  }
  SECTION("a KBFLEET_ pattern") { invalid_message(with("permissions: { env: ['KBFLEET_*'] }\n"), "permissions.env[0]"); }
  SECTION("env not a list") {
    CHECK(invalid_message(with("permissions: { env: LANG }\n"), "permissions.env") ==
          "permissions.env: must be a list of variable names");
  }
}

TEST_CASE("fs globs must stay inside the task workspace", "[manifest]") {
  const std::string rule = "must be a relative path or glob inside the task workspace, e.g. data/**";
  CHECK(invalid_message(with("permissions: { fs: { read: ['/etc/**'] } }\n"), "permissions.fs.read[0]") ==
        "permissions.fs.read[0]: " + rule);
  CHECK(invalid_message(with("permissions: { fs: { write: [out/**, '../x/**'] } }\n"), "permissions.fs.write[1]") ==
        "permissions.fs.write[1]: " + rule);
  CHECK(invalid_message(with("permissions: { fs: { read: data/** } }\n"), "permissions.fs.read") ==
        "permissions.fs.read: must be a list of paths or globs");
  CHECK(invalid_message(with("permissions: { fs: rw }\n"), "permissions.fs") ==
        "permissions.fs: must be a map with read and write lists");
}

TEST_CASE("net is none or a non-empty allow-list", "[manifest]") {
  SECTION("an allow-list") {
    auto m = parse_manifest(with("permissions: { net: { allow: ['example.com:443', 127.0.0.0/8] } }\n"));
    REQUIRE(m.has_value());
    CHECK_FALSE(m->net.none);
    CHECK(m->net.allow == std::vector<std::string>{"example.com:443", "127.0.0.0/8"});
  }
  SECTION("another word") {
    CHECK(invalid_message(with("permissions: { net: all }\n"), "permissions.net") ==
          "permissions.net: must be none or a map { allow: [host:port, cidr, ...] }, got 'all'");
  }
  SECTION("a list") { invalid_message(with("permissions: { net: [a] }\n"), "permissions.net"); }
  SECTION("an empty allow-list") {
    CHECK(invalid_message(with("permissions: { net: { allow: [] } }\n"), "permissions.net.allow") ==
          "permissions.net.allow: must list at least one host:port or CIDR; use net: none for no network");
  }
  SECTION("a map without allow") { invalid_message(with("permissions: { net: {} }\n"), "permissions.net.allow"); }
  SECTION("an empty entry") {
    CHECK(invalid_message(with("permissions: { net: { allow: [a:1, ''] } }\n"), "permissions.net.allow[1]") ==
          "permissions.net.allow[1]: must be a non-empty string such as example.com:443 or 127.0.0.0/8");
  }
  SECTION("an entry that is no address, CIDR or host:port is refused at load, naming it") {
    CHECK(invalid_message(with("permissions: { net: { allow: [10.0.0.0/8, 'cache.local'] } }\n"), "permissions.net.allow[1]") ==
          "permissions.net.allow[1]: 'cache.local': a host name needs a port (forms: 10.1.2.3:443, 10.0.0.0/8, "
          "10.0.0.0/8:5432, name.example:8080)");
    invalid_message(with("permissions: { net: { allow: ['10.0.0.0/40'] } }\n"), "permissions.net.allow[0]");
    invalid_message(with("permissions: { net: { allow: ['[::1]:443'] } }\n"), "permissions.net.allow[0]");
  }
}

TEST_CASE("quotas are positive integers within sane maxima", "[manifest]") {
  auto quota = [](const std::string& key, const std::string& value) {
    return with("permissions:\n  quotas:\n    " + key + ": " + value + "\n");
  };
  SECTION("the maxima themselves are accepted") {
    auto m = parse_manifest(with("permissions: { quotas: { timeoutMs: 86400000, memoryMb: 1048576, cpuMs: 86400000, "
                                 "pids: 100000, outputBytes: 1073741824, diskMb: 1048576 } }\n"));
    REQUIRE(m.has_value());
    CHECK(m->quotas.output_bytes == 1073741824);
    CHECK(m->quotas.disk_mb == 1048576);
  }
  SECTION("diskMb above its maximum") {
    CHECK(invalid_message(quota("diskMb", "1048577"), "permissions.quotas.diskMb") ==
          "permissions.quotas.diskMb: must be a positive integer at most 1048576 (1 TiB), got 1048577");
  }
  SECTION("zero") {
    CHECK(invalid_message(quota("timeoutMs", "0"), "permissions.quotas.timeoutMs") ==
          "permissions.quotas.timeoutMs: must be a positive integer at most 86400000 (24 h), got 0");
  }
  SECTION("negative") {
    CHECK(invalid_message(quota("pids", "-1"), "permissions.quotas.pids") ==
          "permissions.quotas.pids: must be a positive integer at most 100000, got '-1'");
  }
  SECTION("above each maximum") {
    CHECK(invalid_message(quota("timeoutMs", "86400001"), "permissions.quotas.timeoutMs") ==
          "permissions.quotas.timeoutMs: must be a positive integer at most 86400000 (24 h), got 86400001");
    CHECK(invalid_message(quota("memoryMb", "1048577"), "permissions.quotas.memoryMb") ==
          "permissions.quotas.memoryMb: must be a positive integer at most 1048576 (1 TiB), got 1048577");
    CHECK(invalid_message(quota("cpuMs", "86400001"), "permissions.quotas.cpuMs") ==
          "permissions.quotas.cpuMs: must be a positive integer at most 86400000 (24 h), got 86400001");
    CHECK(invalid_message(quota("pids", "100001"), "permissions.quotas.pids") ==
          "permissions.quotas.pids: must be a positive integer at most 100000, got 100001");
    CHECK(invalid_message(quota("outputBytes", "1073741825"), "permissions.quotas.outputBytes") ==
          "permissions.quotas.outputBytes: must be a positive integer at most 1073741824 (1 GiB), got 1073741825");
  }
  SECTION("too large for 64 bits") {
    invalid_message(quota("outputBytes", "99999999999999999999999"), "permissions.quotas.outputBytes");
  }
  SECTION("a fraction") { invalid_message(quota("memoryMb", "1.5"), "permissions.quotas.memoryMb"); }
  SECTION("a word") { invalid_message(quota("memoryMb", "lots"), "permissions.quotas.memoryMb"); }
  SECTION("a quoted number is a string, not an integer") {
    invalid_message(quota("memoryMb", "'256'"), "permissions.quotas.memoryMb");
  }
  SECTION("hexadecimal") { invalid_message(quota("pids", "0x10"), "permissions.quotas.pids"); }
  SECTION("quotas not a map") {
    CHECK(invalid_message(with("permissions: { quotas: 5 }\n"), "permissions.quotas") ==
          "permissions.quotas: must be a map of timeoutMs, memoryMb, cpuMs, pids, outputBytes, diskMb");
  }
  SECTION("permissions not a map") {
    CHECK(invalid_message(with("permissions: all\n"), "permissions") ==
          "permissions: must be a map with env, fs, net and quotas");
  }
}

TEST_CASE("artifacts need unique ids and workspace-relative paths", "[manifest]") {
  SECTION("contentType defaults to application/octet-stream") {
    auto m = parse_manifest(with("artifacts: [{ id: blob, path: out/blob.bin }]\n"));
    REQUIRE(m.has_value());
    CHECK(m->artifacts[0].content_type == "application/octet-stream");
  }
  SECTION("a content type with parameters") {
    auto m = parse_manifest(with("artifacts: [{ id: r, path: r.txt, contentType: 'text/plain; charset=utf-8' }]\n"));
    REQUIRE(m.has_value());
  }
  SECTION("a duplicate id") {
    CHECK(invalid_message(with("artifacts:\n  - { id: r, path: a }\n  - { id: r, path: b }\n"), "artifacts[1].id") ==
          "artifacts[1].id: duplicate artifact id 'r'");
  }
  SECTION("an invalid id") {
    CHECK(invalid_message(with("artifacts: [{ id: My Report, path: a }]\n"), "artifacts[0].id") ==
          "artifacts[0].id: 'My Report' is not a valid artifact id; use lowercase letters, digits, '.', '_' and "
          "'-', starting with a letter or digit (at most 64 characters)");
  }
  SECTION("a missing id") {
    CHECK(invalid_message(with("artifacts: [{ path: a }]\n"), "artifacts[0].id") ==
          "artifacts[0].id: is required, e.g. id: report");
  }
  const std::string rule = "must be a relative path inside the task workspace, e.g. out/report-{taskId}.txt";
  SECTION("an absolute path") {
    CHECK(invalid_message(with("artifacts: [{ id: r, path: /etc/passwd }]\n"), "artifacts[0].path") ==
          "artifacts[0].path: " + rule);
  }
  SECTION("a path escaping with ..") {
    invalid_message(with("artifacts: [{ id: r, path: 'out/{taskId}/../../../x' }]\n"), "artifacts[0].path");
  }
  SECTION("a missing path") {
    CHECK(invalid_message(with("artifacts: [{ id: r }]\n"), "artifacts[0].path") == "artifacts[0].path: is required; " + rule);
  }
  SECTION("an unknown placeholder") {
    CHECK(invalid_message(with("artifacts: [{ id: r, path: 'out/{task}.txt' }]\n"), "artifacts[0].path") ==
          "artifacts[0].path: unknown placeholder '{task}'; only {taskId} is supported");
  }
  SECTION("a content type without a subtype") {
    CHECK(invalid_message(with("artifacts: [{ id: r, path: a, contentType: text }]\n"), "artifacts[0].contentType") ==
          "artifacts[0].contentType: 'text' is not a media type; use type/subtype, e.g. text/plain");
  }
  SECTION("artifacts not a list") {
    CHECK(invalid_message(with("artifacts: { id: r }\n"), "artifacts") ==
          "artifacts: must be a list of { id, path, contentType }");
  }
  SECTION("an artifact that is a string") {
    CHECK(invalid_message(with("artifacts: [out/r.txt]\n"), "artifacts[0]") ==
          "artifacts[0]: must be a map { id, path, contentType }");
  }
}

TEST_CASE("sandbox is process by default or none for trusted plugins", "[manifest]") {
  CHECK(parse_manifest(with("sandbox: none\n"))->sandbox == SandboxMode::kNone);
  CHECK(parse_manifest(with("sandbox: process\n"))->sandbox == SandboxMode::kProcess);
  CHECK(invalid_message(with("sandbox: off\n"), "sandbox") == "sandbox: must be process (the default) or none");
}

TEST_CASE("bad YAML syntax is MANIFEST_INVALID naming the line", "[manifest]") {
  auto m = parse_manifest("id: hello\nversion: 1.0.0\nhandlers: { greet: [1, 2 }\n");
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().code == ErrorCode::kManifestInvalid);
  CHECK(m.error().details.at("line") == "3");
  CHECK(m.error().message.rfind("invalid YAML at line 3, column ", 0) == 0);

  auto undefined_alias = parse_manifest("id: *x\n");
  REQUIRE_FALSE(undefined_alias.has_value());
  CHECK(undefined_alias.error().message == "invalid YAML at line 1, column 5: the referenced anchor is not defined");
}

TEST_CASE("a document that is not a map is rejected", "[manifest]") {
  for (const std::string text : {"", "# only a comment\n", "hello\n", "- id: hello\n"}) {
    auto m = parse_manifest(text);
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().code == ErrorCode::kManifestInvalid);
    CHECK(m.error().message == "a manifest must be a YAML map with id, version and handlers");
  }
}

TEST_CASE("hostile manifests are refused without crashing", "[manifest]") {
  SECTION("more than 1 MiB") {
    auto m = parse_manifest(with("# " + std::string(1 << 20, 'x') + "\n"));
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().message.find("the limit is 1 MiB") != std::string::npos);
  }
  SECTION("nesting deeper than the parser allows") {
    auto m = parse_manifest("id: " + std::string(5000, '[') + "\n");
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().code == ErrorCode::kManifestInvalid);
  }
  SECTION("a complex map key") {
    auto m = parse_manifest(with("? [a, b]\n: c\n"));
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().message == "map keys must be plain strings");
  }
}

TEST_CASE("load_manifest reports a missing kbfleet.yaml", "[manifest]") {
  auto m = load_manifest("/nonexistent/kbfleet-plugin");
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().code == ErrorCode::kManifestInvalid);
  CHECK(m.error().message == "no readable kbfleet.yaml in /nonexistent/kbfleet-plugin");
}

TEST_CASE("valid_id, valid_relative_path and expand_artifact_path follow the documented rules", "[manifest]") {
  CHECK(valid_id("hello"));
  CHECK(valid_id("0a.b_c-d"));
  CHECK(valid_id(std::string(64, 'a')));
  CHECK_FALSE(valid_id(std::string(65, 'a')));
  CHECK_FALSE(valid_id(""));
  CHECK_FALSE(valid_id("-a"));
  CHECK_FALSE(valid_id(".a"));
  CHECK_FALSE(valid_id("A"));
  CHECK_FALSE(valid_id("a b"));
  CHECK_FALSE(valid_id("a/b"));

  CHECK(valid_relative_path("bin/greet.sh"));
  CHECK(valid_relative_path("./x"));
  CHECK(valid_relative_path("data/**"));
  CHECK(valid_relative_path("a..b/c.."));
  CHECK_FALSE(valid_relative_path(""));
  CHECK_FALSE(valid_relative_path("/abs"));
  CHECK_FALSE(valid_relative_path(".."));
  CHECK_FALSE(valid_relative_path("../x"));
  CHECK_FALSE(valid_relative_path("a/../b"));
  CHECK_FALSE(valid_relative_path("a/.."));
  CHECK_FALSE(valid_relative_path(std::string_view{"a\0b", 3}));

  ArtifactDecl d{"r", "out/{taskId}/report-{taskId}.txt", "text/plain"};
  CHECK(expand_artifact_path(d, "t-42") == "out/t-42/report-t-42.txt");
  ArtifactDecl plain{"b", "out/blob.bin", "application/octet-stream"};
  CHECK(expand_artifact_path(plain, "t-42") == "out/blob.bin");
}

}  // namespace
}  // namespace kbfleet::manifest
