#pragma once
// The plugins a worker offers: a scan of --plugins DIR. A plugin lives in <dir>/<id>/kbfleet.yaml
// or <dir>/<id>/<version>/kbfleet.yaml. An invalid manifest does not stop the scan: the entry is
// kept with its error so the worker can advertise it as broken (the broker then answers
// MANIFEST_INVALID to submissions for it instead of PLUGIN_NOT_FOUND).
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/errors/error.hpp"
#include "common/manifest/manifest.hpp"

namespace kbfleet::manifest {

struct PluginEntry {
  std::filesystem::path root;  // directory holding kbfleet.yaml (absolute)
  std::string id;              // from the manifest, or the directory name when invalid
  std::string version;         // from the manifest, or the version directory name, or ""
  std::optional<Manifest> manifest;  // set when valid
  std::optional<Error> error;        // set when invalid (MANIFEST_INVALID)
};

class Registry {
 public:
  // IO_ERROR if `dir` cannot be read. Entries are sorted by id then version.
  [[nodiscard]] static Result<Registry> scan(const std::filesystem::path& dir);

  const std::vector<PluginEntry>& entries() const { return entries_; }
  // The valid entry for id and version; empty version = the highest version (semver-aware
  // compare of dot-separated numbers, then lexicographic). nullptr if none.
  const PluginEntry* find(std::string_view id, std::string_view version) const;
  // Any entry (valid or not) with this id, for error reporting.
  const PluginEntry* find_any(std::string_view id) const;

 private:
  std::vector<PluginEntry> entries_;
};

// -1, 0, 1 like strcmp, comparing "1.10.0" > "1.9.2".
int compare_versions(std::string_view a, std::string_view b);

}  // namespace kbfleet::manifest
