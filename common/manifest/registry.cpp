#include "common/manifest/registry.hpp"

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace kbfleet::manifest {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kManifestFile = "kbfleet.yaml";

tl::unexpected<Error> invalid(const std::string& field, const std::string& what) {
  return make_error(ErrorCode::kManifestInvalid, field + ": " + what, {{"field", field}});
}

std::string in_quotes(std::string_view s) { return "'" + std::string{s} + "'"; }

// Component-wise: "/p/hello-evil" is not inside "/p/hello" although it starts with that string.
bool is_within(const fs::path& root, const fs::path& target) {
  auto r = root.begin();
  auto t = target.begin();
  for (; r != root.end(); ++r, ++t) {
    if (r->empty()) continue;  // a trailing separator yields an empty last component
    if (t == target.end() || *r != *t) return false;
  }
  return true;
}

// The exec must be a regular executable file inside the plugin root after resolving symlinks,
// so a plugin cannot run /bin/sh (or another plugin) through a link.
Status check_exec(const fs::path& root, const Handler& h) {
  std::string field = "handlers." + h.name + ".exec";
  std::error_code ec;
  fs::path canon_root = fs::weakly_canonical(root, ec);
  fs::path target = ec ? fs::path{} : fs::weakly_canonical(root / h.exec, ec);
  if (ec) return invalid(field, "cannot resolve " + in_quotes(h.exec) + ": " + ec.message());
  if (!is_within(canon_root, target)) {
    return invalid(field, in_quotes(h.exec) + " resolves outside the plugin directory; symlinks must stay inside it");
  }
  fs::file_status st = fs::status(target, ec);  // `target` is canonical: no symlink is followed here
  if (st.type() == fs::file_type::not_found) {
    return invalid(field, in_quotes(h.exec) + " does not exist in the plugin directory");
  }
  if (ec) return invalid(field, "cannot stat " + in_quotes(h.exec) + ": " + ec.message());
  if (st.type() != fs::file_type::regular) return invalid(field, in_quotes(h.exec) + " is not a regular file");
  constexpr auto kAnyExec = fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec;
  if ((st.permissions() & kAnyExec) == fs::perms::none) {
    return invalid(field, in_quotes(h.exec) + " is not executable; run chmod +x " + h.exec);
  }
  return {};
}

// One plugin version rooted at `root`, found as <dir_id>/ or <dir_id>/<dir_version>/.
PluginEntry load_entry(const fs::path& root, const std::string& dir_id, const std::string& dir_version) {
  PluginEntry entry{root, dir_id, dir_version, std::nullopt, std::nullopt};
  auto m = load_manifest(root);
  if (!m) {
    entry.error = std::move(m.error());
    return entry;
  }
  if (dir_version.empty()) entry.version = m->version;
  Status ok;
  if (m->id != dir_id) {
    ok = invalid("id", in_quotes(m->id) + " does not match its directory " + in_quotes(dir_id));
  } else if (!dir_version.empty() && m->version != dir_version) {
    ok = invalid("version", in_quotes(m->version) + " does not match its directory " + in_quotes(dir_version));
  }
  for (const auto& [name, handler] : m->handlers) {
    if (ok) ok = check_exec(root, handler);
  }
  if (!ok) {
    ok.error().details["file"] = (root / kManifestFile).string();
    entry.error = std::move(ok.error());
    return entry;
  }
  entry.manifest = std::move(*m);
  return entry;
}

// Visible subdirectory names of `dir`, sorted; hidden ones (".git", ".staging") are skipped.
Result<std::vector<std::string>> subdirectories(const fs::path& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return errno_error("opendir", dir.string(), ec.value());
  std::vector<std::string> names;
  for (; it != fs::directory_iterator{}; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (!name.starts_with('.') && it->is_directory(type_ec)) names.push_back(std::move(name));
  }
  if (ec) return errno_error("readdir", dir.string(), ec.value());
  std::sort(names.begin(), names.end());
  return names;
}

// Splits "1.2.3-rc.1+build" into the dot-separated core and pre-release identifiers.
void split_version(std::string_view v, std::vector<std::string_view>& core, std::vector<std::string_view>& pre) {
  v = v.substr(0, v.find('+'));
  std::size_t dash = v.find('-');
  std::string_view pre_text = dash == std::string_view::npos ? std::string_view{} : v.substr(dash + 1);
  v = v.substr(0, dash);
  auto split = [](std::string_view s, std::vector<std::string_view>& out) {
    while (!s.empty()) {
      std::size_t dot = s.find('.');
      out.push_back(s.substr(0, dot));
      s = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
    }
  };
  split(v, core);
  split(pre_text, pre);
}

bool numeric(std::string_view s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos; }

int sign(int v) { return (v > 0) - (v < 0); }

// Numbers compare by value (without overflow: by length after leading zeros), numbers sort before
// words, words compare as bytes.
int compare_identifier(std::string_view a, std::string_view b) {
  bool na = numeric(a);
  bool nb = numeric(b);
  if (na && nb) {
    a.remove_prefix(std::min(a.find_first_not_of('0'), a.size()));
    b.remove_prefix(std::min(b.find_first_not_of('0'), b.size()));
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    return sign(a.compare(b));
  }
  if (na != nb) return na ? -1 : 1;
  return sign(a.compare(b));
}

}  // namespace

int compare_versions(std::string_view a, std::string_view b) {
  std::vector<std::string_view> core_a, pre_a, core_b, pre_b;
  split_version(a, core_a, pre_a);
  split_version(b, core_b, pre_b);
  // Missing core components count as 0 ("1.2" == "1.2.0" here; the final tie-break orders them).
  for (std::size_t i = 0; i < std::max(core_a.size(), core_b.size()); ++i) {
    std::string_view x = i < core_a.size() ? core_a[i] : "0";
    std::string_view y = i < core_b.size() ? core_b[i] : "0";
    if (int c = compare_identifier(x, y); c != 0) return c;
  }
  // Semver: a pre-release sorts before its release; then identifier by identifier, shorter first.
  if (pre_a.empty() != pre_b.empty()) return pre_a.empty() ? 1 : -1;
  for (std::size_t i = 0; i < std::min(pre_a.size(), pre_b.size()); ++i) {
    if (int c = compare_identifier(pre_a[i], pre_b[i]); c != 0) return c;
  }
  if (pre_a.size() != pre_b.size()) return pre_a.size() < pre_b.size() ? -1 : 1;
  return sign(a.compare(b));
}

Result<Registry> Registry::scan(const fs::path& dir) {
  std::error_code ec;
  fs::path base = fs::absolute(dir, ec);
  if (ec) return errno_error("realpath", dir.string(), ec.value());
  auto ids = subdirectories(base);
  if (!ids) return tl::unexpected(std::move(ids.error()));

  Registry reg;
  for (const std::string& id : *ids) {
    fs::path plugin = base / id;
    if (fs::exists(plugin / kManifestFile, ec)) {
      reg.entries_.push_back(load_entry(plugin, id, ""));
      continue;
    }
    auto versions = subdirectories(plugin);
    if (!versions) {
      reg.entries_.push_back(PluginEntry{plugin, id, "", std::nullopt, versions.error()});
      continue;
    }
    if (versions->empty()) {
      Error e{ErrorCode::kManifestInvalid,
              "no kbfleet.yaml in " + plugin.string() + " and no version directories holding one",
              {{"file", (plugin / kManifestFile).string()}}};
      reg.entries_.push_back(PluginEntry{plugin, id, "", std::nullopt, std::move(e)});
    }
    for (const std::string& version : *versions) {
      reg.entries_.push_back(load_entry(plugin / version, id, version));
    }
  }
  std::sort(reg.entries_.begin(), reg.entries_.end(), [](const PluginEntry& a, const PluginEntry& b) {
    if (a.id != b.id) return a.id < b.id;
    if (int c = compare_versions(a.version, b.version); c != 0) return c < 0;
    return a.root < b.root;
  });
  return reg;
}

const PluginEntry* Registry::find(std::string_view id, std::string_view version) const {
  const PluginEntry* best = nullptr;
  for (const PluginEntry& e : entries_) {
    if (e.id != id || !e.manifest) continue;
    if (!version.empty()) {
      if (e.version == version) return &e;
    } else if (best == nullptr || compare_versions(e.version, best->version) > 0) {
      best = &e;
    }
  }
  return best;
}

const PluginEntry* Registry::find_any(std::string_view id) const {
  for (const PluginEntry& e : entries_) {
    if (e.id == id) return &e;
  }
  return nullptr;
}

}  // namespace kbfleet::manifest
