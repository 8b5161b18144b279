#pragma once
// The handler's environment, built from scratch (pure; no syscalls). Only names allowed by the
// manifest's `permissions.env` (exact names or "PREFIX_*" patterns) pass, plus the KBFLEET_*
// variables the worker sets and a fixed PATH. A submitted variable that the manifest does not
// allow is PERMISSION_DENIED naming it (never silently dropped).
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors/error.hpp"

namespace kbfleet::permissions {

inline constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

bool env_name_allowed(const std::vector<std::string>& patterns, std::string_view name);

struct EnvInputs {
  const std::vector<std::string>* allowed = nullptr;        // manifest patterns
  const std::map<std::string, std::string>* submitted = nullptr;  // from the task
  const std::map<std::string, std::string>* host = nullptr;       // the worker's own environment
  std::map<std::string, std::string> kbfleet;              // KBFLEET_* set by the worker
};

// Returns "NAME=value" strings sorted by name. Submitted values win over host values; host
// values pass only when allowed. PATH defaults to kDefaultPath unless allowed and given.
[[nodiscard]] Result<std::vector<std::string>> build_env(const EnvInputs& in);

}  // namespace kbfleet::permissions
