#pragma once
// The broker's allow-list (--auth FILE): which CURVE public keys may connect, as which identity
// (tenant + role), and each tenant's policy. One entry per line, `#` starts a comment:
//
//   tenant NAME [plugins=a,b|*] [max_queued=N] [max_running=N] [rate=N] [burst=N]
//   KEY TENANT ROLE
//
// A word starting with `#` begins a comment, except a key (Z85 keys may start with `#`).
// KEY is a 40-character Z85 public key, or @PATH of a certificate (`kbfleet keygen`'s .pub; a
// relative PATH is relative to the allow-list's directory). ROLE is client, worker, subscriber
// or admin. A tenant without a `tenant` line may submit every plugin, without limits. `rate` is
// submissions per second (token bucket of `burst`, default = rate); 0 = unlimited.
// Parsing is all-or-nothing: an error names the line, and the caller keeps its previous list.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/errors/error.hpp"

namespace kbfleet::broker {

enum class Role { kClient, kWorker, kSubscriber, kAdmin };
std::string_view role_name(Role role);

struct Identity {
  std::string tenant;
  Role role = Role::kClient;
  std::string key;  // Z85 public key (public: may be logged)
  std::string to_string() const;  // "tenant/role"
};

struct TenantPolicy {
  std::optional<std::set<std::string>> plugins;  // nullopt = every plugin
  std::int64_t max_queued = 0;                   // 0 = no per-tenant limit
  std::int64_t max_running = 0;
  double rate = 0;  // submissions per second, 0 = unlimited
  double burst = 0;
  bool allows_plugin(const std::string& plugin) const { return !plugins || plugins->count(plugin) > 0; }
};

class AllowList {
 public:
  // INVALID_ARGUMENT naming file and line; IO_ERROR if it cannot be read.
  [[nodiscard]] static Result<AllowList> load(const std::string& path);
  [[nodiscard]] static Result<AllowList> parse(std::string_view text, const std::string& origin,
                                               const std::string& base_dir);

  const Identity* find(const std::string& z85_key) const;
  const TenantPolicy& policy(const std::string& tenant) const;
  std::size_t size() const { return keys_.size(); }

  // A tenant name: 1-64 of [a-z0-9_-].
  static bool valid_tenant(std::string_view name);

 private:
  std::unordered_map<std::string, Identity> keys_;
  std::map<std::string, TenantPolicy> tenants_;
  TenantPolicy default_policy_;
};

}  // namespace kbfleet::broker
