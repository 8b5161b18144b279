// Guarantees of build_env (each has a test in tests/common/permissions/env_test.cpp):
//  1. Nothing from the worker's environment reaches a handler unless the manifest allows its name.
//  2. A submitted variable the manifest does not allow is PERMISSION_DENIED naming it; nothing
//     submitted is dropped silently.
//  3. KBFLEET_* names are the worker's alone: submitted ones are PERMISSION_DENIED and host ones
//     never pass, even if a pattern would match them.
//  4. Names and values cannot smuggle a second variable: a name must be [A-Za-z_][A-Za-z0-9_]*
//     and no value may contain NUL (INVALID_ARGUMENT otherwise).
//  5. HOME is the task workspace whenever the worker gives KBFLEET_WORKSPACE; PATH is the fixed
//     kDefaultPath unless the manifest allows PATH and a value is given.
//  6. The output is sorted by name, so the same inputs give the same environment.
#include "common/permissions/env.hpp"

namespace kbfleet::permissions {
namespace {

constexpr std::string_view kReservedPrefix = "KBFLEET_";

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// "PREFIX_*": a name ending in '_' followed by '*'. Anything else is only ever an exact name, so a
// malformed pattern such as "*" can never widen what passes.
bool matches(std::string_view pattern, std::string_view name) {
  if (pattern.size() >= 2 && pattern.back() == '*') {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);
    return prefix.back() == '_' && valid_name(prefix) && name.starts_with(prefix);
  }
  return pattern == name;
}

std::string allowed_list(const std::vector<std::string>* allowed) {
  if (allowed == nullptr || allowed->empty()) return "none";
  std::string out;
  for (const std::string& p : *allowed) {
    if (!out.empty()) out += ", ";
    out += p;
  }
  return out;
}

Status check_submitted(const EnvInputs& in, const std::string& name, const std::string& value) {
  if (!valid_name(name)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "environment variable name '" + name + "' is invalid; use [A-Za-z_][A-Za-z0-9_]*",
                      {{"name", name}});
  }
  if (value.find('\0') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "environment variable " + name + " contains a NUL byte",
                      {{"name", name}});
  }
  if (name.starts_with(kReservedPrefix)) {
    return make_error(ErrorCode::kPermissionDenied,
                      "environment variable " + name + " is reserved: KBFLEET_* variables are set by the worker",
                      {{"name", name}});
  }
  if (name == "HOME" && in.kbfleet.contains("KBFLEET_WORKSPACE")) {
    return make_error(ErrorCode::kPermissionDenied,
                      "environment variable HOME is set by the worker to the task workspace", {{"name", name}});
  }
  if (in.allowed == nullptr || !env_name_allowed(*in.allowed, name)) {
    return make_error(ErrorCode::kPermissionDenied,
                      "environment variable " + name + " is not allowed by the plugin's permissions.env (allowed: " +
                          allowed_list(in.allowed) + ")",
                      {{"name", name}});
  }
  return {};
}

}  // namespace

bool env_name_allowed(const std::vector<std::string>& patterns, std::string_view name) {
  if (!valid_name(name) || name.starts_with(kReservedPrefix)) return false;
  for (const std::string& p : patterns) {
    if (matches(p, name)) return true;
  }
  return false;
}

Result<std::vector<std::string>> build_env(const EnvInputs& in) {
  std::map<std::string, std::string> env;
  if (in.host != nullptr && in.allowed != nullptr) {
    for (const auto& [name, value] : *in.host) {
      if (env_name_allowed(*in.allowed, name) && value.find('\0') == std::string::npos) env[name] = value;
    }
  }
  if (in.submitted != nullptr) {
    for (const auto& [name, value] : *in.submitted) {
      if (auto s = check_submitted(in, name, value); !s) return tl::unexpected(std::move(s.error()));
      env[name] = value;
    }
  }
  if (!env.contains("PATH")) env["PATH"] = std::string{kDefaultPath};
  for (const auto& [name, value] : in.kbfleet) {
    KB_CHECK(name.starts_with(kReservedPrefix) && valid_name(name) && value.find('\0') == std::string::npos);
    env[name] = value;
  }
  if (auto ws = in.kbfleet.find("KBFLEET_WORKSPACE"); ws != in.kbfleet.end()) env["HOME"] = ws->second;

  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [name, value] : env) out.push_back(name + "=" + value);
  return out;
}

}  // namespace kbfleet::permissions
