#include "broker/auth/allow_list.hpp"

#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/security/cert.hpp"

namespace kbfleet::broker {
namespace {

// The words of a line without its comment. '#' is also a Z85 character, so a comment is a word
// starting with '#' that is not the line's key (keys are the first word; no other word may
// start with '#').
std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) {
    if (w[0] == '#' && !(out.empty() && security::valid_z85_key(w))) break;
    out.push_back(w);
  }
  return out;
}

std::optional<Role> parse_role(std::string_view s) {
  if (s == "client") return Role::kClient;
  if (s == "worker") return Role::kWorker;
  if (s == "subscriber") return Role::kSubscriber;
  if (s == "admin") return Role::kAdmin;
  return std::nullopt;
}

std::optional<std::int64_t> parse_count(std::string_view s) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

}  // namespace

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kClient: return "client";
    case Role::kWorker: return "worker";
    case Role::kSubscriber: return "subscriber";
    case Role::kAdmin: return "admin";
  }
  return "client";
}

std::string Identity::to_string() const { return tenant + "/" + std::string(role_name(role)); }

bool AllowList::valid_tenant(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

Result<AllowList> AllowList::load(const std::string& path) {
  std::ifstream f(path);
  if (!f) return errno_error("open", path, errno);
  std::stringstream ss;
  ss << f.rdbuf();
  auto slash = path.rfind('/');
  return parse(ss.str(), path, slash == std::string::npos ? "." : path.substr(0, slash));
}

Result<AllowList> AllowList::parse(std::string_view text, const std::string& origin, const std::string& base_dir) {
  AllowList list;
  std::istringstream lines{std::string(text)};
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    ++n;
    auto bad = [&](const std::string& what) {
      return make_error(ErrorCode::kInvalidArgument, origin + ":" + std::to_string(n) + ": " + what,
                        {{"path", origin}, {"line", std::to_string(n)}});
    };
    auto w = words(line);
    if (w.empty()) continue;
    if (w[0] == "tenant") {
      if (w.size() < 2 || !valid_tenant(w[1])) return bad("expected `tenant NAME [key=value...]`, NAME of [a-z0-9_-]");
      TenantPolicy p;
      bool burst_set = false;
      for (std::size_t i = 2; i < w.size(); ++i) {
        auto eq = w[i].find('=');
        if (eq == std::string::npos) return bad("expected key=value, got '" + w[i] + "'");
        std::string k = w[i].substr(0, eq), v = w[i].substr(eq + 1);
        if (k == "plugins") {
          if (v == "*") continue;
          p.plugins.emplace();
          std::istringstream items(v);
          for (std::string item; std::getline(items, item, ',');) {
            if (!item.empty()) p.plugins->insert(item);
          }
          continue;
        }
        if (k != "max_queued" && k != "max_running" && k != "rate" && k != "burst") {
          return bad("unknown tenant setting '" + k + "' (plugins, max_queued, max_running, rate, burst)");
        }
        auto count = parse_count(v);
        if (!count) return bad("'" + k + "' needs a non-negative integer, got '" + v + "'");
        if (k == "max_queued") p.max_queued = *count;
        else if (k == "max_running") p.max_running = *count;
        else if (k == "rate") p.rate = static_cast<double>(*count);
        else { p.burst = static_cast<double>(*count); burst_set = true; }
      }
      if (!burst_set) p.burst = p.rate;
      list.tenants_[w[1]] = std::move(p);
      continue;
    }
    if (w.size() != 3) return bad("expected `KEY TENANT ROLE` or `tenant NAME ...`");
    std::string key = w[0];
    if (!security::valid_z85_key(key)) {
      if (key.size() < 2 || key[0] != '@') return bad("KEY must be a 40-character Z85 public key or @CERTIFICATE");
      std::string path = key.substr(1);
      if (path[0] != '/') path = base_dir + "/" + path;
      auto loaded = security::load_public_key(path);
      if (!loaded) return bad(loaded.error().message);
      key = *loaded;
    }
    if (!valid_tenant(w[1])) return bad("tenant '" + w[1] + "' is not valid ([a-z0-9_-], at most 64)");
    auto role = parse_role(w[2]);
    if (!role) return bad("role '" + w[2] + "' is not one of client, worker, subscriber, admin");
    if (list.keys_.count(key)) return bad("key " + key + " is listed twice");
    list.keys_[key] = Identity{w[1], *role, key};
  }
  return list;
}

const Identity* AllowList::find(const std::string& z85_key) const {
  auto it = keys_.find(z85_key);
  return it == keys_.end() ? nullptr : &it->second;
}

const TenantPolicy& AllowList::policy(const std::string& tenant) const {
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? default_policy_ : it->second;
}

}  // namespace kbfleet::broker
