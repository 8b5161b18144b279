// Fuzzes plugin manifest parsing: manifest::parse_manifest on the input as YAML text (a manifest
// is user input: any problem must be a MANIFEST_INVALID Error, never an exception or a crash).
// Invariants checked (a failure traps): every error is MANIFEST_INVALID; an accepted manifest
// satisfies the rules parse_manifest promises (valid ids, relative paths, at least one handler,
// positive quotas).
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/manifest/manifest.hpp"

namespace {

using namespace kbfleet::manifest;

[[noreturn]] void invariant_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant broken: %s: %s\n", what, detail.c_str());
  __builtin_trap();
}

void check_accepted(const Manifest& m) {
  if (!valid_id(m.id)) invariant_failed("id", m.id);
  if (m.version.empty()) invariant_failed("version", "empty");
  if (m.handlers.empty()) invariant_failed("handlers", "none");
  for (const auto& [name, h] : m.handlers) {
    if (name != h.name || !valid_id(name)) invariant_failed("handler name", name);
    if (!valid_relative_path(h.exec)) invariant_failed("handler exec", h.exec);
  }
  for (const auto* list : {&m.fs.read, &m.fs.write}) {
    for (const auto& p : *list) {
      if (!valid_relative_path(p)) invariant_failed("fs path", p);
    }
  }
  if (!m.net.none && m.net.allow.empty()) invariant_failed("net", "allow list empty");
  const auto& q = m.quotas;
  if (q.timeout_ms < 1 || q.memory_mb < 1 || q.cpu_ms < 1 || q.pids < 1 || q.output_bytes < 1) {
    invariant_failed("quotas", "not positive");
  }
  for (const auto& a : m.artifacts) {
    if (!valid_id(a.id)) invariant_failed("artifact id", a.id);
    std::string expanded = expand_artifact_path(a, "task-1");
    if (!valid_relative_path(expanded)) invariant_failed("artifact path", expanded);
    if (a.content_type.empty()) invariant_failed("artifact content type", "empty");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto m = parse_manifest(std::string_view(reinterpret_cast<const char*>(data), size));
  if (m) {
    check_accepted(*m);
  } else if (m.error().code != kbfleet::ErrorCode::kManifestInvalid) {
    invariant_failed("error code", m.error().to_string());
  }
  return 0;
}
