#pragma once
// A plugin manifest (kbfleet.yaml) parsed and validated into typed values. The format is
// specified in docs/plugins.md. A manifest is user input: every problem is a MANIFEST_INVALID
// Error whose message names the field (e.g. "handlers.greet.exec: must be relative ...") and
// whose details carry {"field": "<dotted path>"}.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::manifest {

struct Handler {
  std::string name;
  std::string exec;  // relative to the plugin root, no "..", not absolute
  std::vector<std::string> args;
  bool idempotent = false;  // may be retried after a lost worker (issue #5)
};

struct NetPolicy {
  bool none = true;                // `net: none` (the default)
  std::vector<std::string> allow;  // `net: {allow: [host:port, cidr...]}`
};

struct FsPolicy {
  std::vector<std::string> read;   // globs relative to the task workspace
  std::vector<std::string> write;
};

struct Quotas {
  std::int64_t timeout_ms = 30000;
  std::int64_t memory_mb = 256;
  std::int64_t cpu_ms = 10000;
  std::int64_t pids = 64;
  std::int64_t disk_mb = 512;  // workspace size (a tmpfs: its bytes count towards memory too)
  std::int64_t output_bytes = 8 << 20;
};

struct ArtifactDecl {
  std::string id;            // [a-z0-9][a-z0-9._-]*
  std::string path;          // relative to the workspace; may contain {taskId}
  std::string content_type;  // default application/octet-stream
};

enum class SandboxMode { kProcess, kNone };  // `sandbox: process` (default) | `none` (trusted)

struct Manifest {
  std::string id;
  std::string version;
  std::vector<std::string> capabilities;
  std::map<std::string, Handler> handlers;  // at least one
  std::vector<std::string> env;             // allowed names or "PREFIX_*" patterns
  FsPolicy fs;
  NetPolicy net;
  Quotas quotas;
  std::vector<ArtifactDecl> artifacts;
  SandboxMode sandbox = SandboxMode::kProcess;
};

// Parses YAML text. MANIFEST_INVALID naming the field on any problem (bad YAML gives the line).
[[nodiscard]] Result<Manifest> parse_manifest(std::string_view yaml_text);
// Reads <plugin_root>/kbfleet.yaml and parses it; MANIFEST_INVALID if absent or bad.
[[nodiscard]] Result<Manifest> load_manifest(const std::filesystem::path& plugin_root);

// True if `id` matches [a-z0-9][a-z0-9._-]* and is at most 64 characters.
bool valid_id(std::string_view id);
// True if `path` is relative, non-empty, has no ".." component and no NUL.
bool valid_relative_path(std::string_view path);
// Artifact path with {taskId} replaced.
std::string expand_artifact_path(const ArtifactDecl& decl, std::string_view task_id);

}  // namespace kbfleet::manifest
