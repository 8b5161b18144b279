#include "common/manifest/manifest.hpp"

#include <fstream>
#include <set>

#include <yaml-cpp/yaml.h>

#include "common/manifest/yaml_fields.hpp"
#include "common/permissions/net_allow.hpp"

namespace kbfleet::manifest {
namespace {

using namespace yaml_fields;
using YAML::Node;

constexpr std::size_t kMaxManifestBytes = 1 << 20;
constexpr std::size_t kMaxNameLength = 64;
constexpr std::string_view kDefaultContentType = "application/octet-stream";
constexpr std::string_view kReservedEnvPrefix = "KBFLEET_";

bool is_name_char(char c, bool first) {
  bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  return alpha || (!first && c >= '0' && c <= '9');
}

// NAME = [A-Za-z_][A-Za-z0-9_]*
bool valid_env_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!is_name_char(name[i], i == 0)) return false;
  }
  return true;
}

// NAME, or PREFIX_* where PREFIX_ is a NAME ending in '_'.
bool valid_env_pattern(std::string_view p) {
  if (p.size() >= 2 && p.back() == '*') {
    std::string_view prefix = p.substr(0, p.size() - 1);
    return prefix.back() == '_' && valid_env_name(prefix);
  }
  return valid_env_name(p);
}

bool valid_version(std::string_view v) {
  if (v.empty() || v.size() > kMaxNameLength) return false;
  return v.find_first_not_of("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.+-") ==
         std::string_view::npos;
}

// type/subtype with RFC 7230 token characters, optionally followed by "; parameters".
bool valid_content_type(std::string_view ct) {
  if (ct.empty() || ct.size() > 255) return false;
  for (char c : ct) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  std::string_view media = ct.substr(0, ct.find(';'));
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  constexpr std::string_view kToken =
      "!#$%&'*+.^_`|~-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::size_t slash = media.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == media.size()) return false;
  return media.substr(0, slash).find_first_not_of(kToken) == std::string_view::npos &&
         media.substr(slash + 1).find_first_not_of(kToken) == std::string_view::npos;
}

std::string in_quotes(std::string_view s) { return "'" + std::string{s} + "'"; }

const std::string kIdRule =
    "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit (at most 64 characters)";

Result<std::string> read_required(const Node& map, std::string_view key, std::string_view example) {
  Node node = value_of(map, key);
  if (absent(node)) return invalid(key, "is required, e.g. " + std::string{example}, map);
  auto s = read_string(node, key);
  if (s && s->empty()) return invalid(key, "is required, e.g. " + std::string{example}, node);
  return s;
}

Result<Handler> parse_handler(const std::string& name, const Node& node) {
  std::string path = child("handlers", name);
  if (!valid_id(name)) return invalid(path, in_quotes(name) + " is not a valid handler name; " + kIdRule, node);
  if (auto s = check_map(node, path, {"exec", "args", "idempotent"}, "a map with exec, e.g. { exec: bin/greet.sh }");
      !s) {
    return tl::unexpected(std::move(s.error()));
  }
  Handler h;
  h.name = name;
  Node exec = value_of(node, "exec");
  if (absent(exec)) return invalid(child(path, "exec"), "is required, e.g. exec: bin/" + name + ".sh", node);
  auto e = read_string(exec, child(path, "exec"));
  if (!e) return tl::unexpected(std::move(e.error()));
  if (!valid_relative_path(*e)) {
    return invalid(child(path, "exec"), "must be a relative path inside the plugin, e.g. bin/greet.sh", exec);
  }
  h.exec = std::move(*e);
  auto args = read_string_list(value_of(node, "args"), child(path, "args"), "strings");
  if (!args) return tl::unexpected(std::move(args.error()));
  h.args = std::move(*args);
  if (Node idem = value_of(node, "idempotent"); !absent(idem)) {
    auto b = read_bool(idem, child(path, "idempotent"));
    if (!b) return tl::unexpected(std::move(b.error()));
    h.idempotent = *b;
  }
  return h;
}

Status parse_handlers(const Node& root, Manifest& m) {
  Node node = value_of(root, "handlers");
  const std::string example = "at least one handler is required, e.g. handlers: { greet: { exec: bin/greet.sh } }";
  if (absent(node)) return invalid("handlers", example, root);
  if (!node.IsMap()) return invalid("handlers", "must be a map of handler name to { exec, args }", node);
  if (auto s = check_keys_distinct(node, "handlers"); !s) return s;
  if (node.size() == 0) return invalid("handlers", example, node);
  for (const auto& kv : node) {
    auto h = parse_handler(kv.first.Scalar(), kv.second);
    if (!h) return tl::unexpected(std::move(h.error()));
    m.handlers.emplace(h->name, std::move(*h));
  }
  return {};
}

Status parse_env(const Node& node, Manifest& m) {
  auto env = read_string_list(node, "permissions.env", "variable names");
  if (!env) return tl::unexpected(std::move(env.error()));
  for (std::size_t i = 0; i < env->size(); ++i) {
    const std::string& p = (*env)[i];
    if (p.starts_with(kReservedEnvPrefix)) {
      return invalid(item("permissions.env", i),
                     in_quotes(p) + " is reserved: KBFLEET_* variables are set by the worker", node[i]);
    }
    if (!valid_env_pattern(p)) {
      return invalid(item("permissions.env", i),
                     in_quotes(p) + " is not a variable name or prefix pattern; use NAME or PREFIX_* (e.g. LANG, CI_*)",
                     node[i]);
    }
  }
  m.env = std::move(*env);
  return {};
}

Status parse_fs(const Node& node, Manifest& m) {
  if (absent(node)) return {};
  if (auto s = check_map(node, "permissions.fs", {"read", "write"}, "a map with read and write lists"); !s) return s;
  for (auto [key, out] : {std::pair{"read", &m.fs.read}, std::pair{"write", &m.fs.write}}) {
    std::string path = child("permissions.fs", key);
    Node list = value_of(node, key);
    auto globs = read_string_list(list, path, "paths or globs");
    if (!globs) return tl::unexpected(std::move(globs.error()));
    for (std::size_t i = 0; i < globs->size(); ++i) {
      if (!valid_relative_path((*globs)[i])) {
        return invalid(item(path, i), "must be a relative path or glob inside the task workspace, e.g. data/**",
                       list[i]);
      }
    }
    *out = std::move(*globs);
  }
  return {};
}

Status parse_net(const Node& node, Manifest& m) {
  const std::string shape = "none or a map { allow: [host:port, cidr, ...] }";
  if (absent(node)) return {};
  if (node.IsScalar()) {
    if (node.Scalar() == "none") return {};
    return invalid("permissions.net", "must be " + shape + ", got " + in_quotes(node.Scalar()), node);
  }
  if (auto s = check_map(node, "permissions.net", {"allow"}, shape); !s) return s;
  Node list = value_of(node, "allow");
  auto allow = read_string_list(list, "permissions.net.allow", "host:port or CIDR strings");
  if (!allow) return tl::unexpected(std::move(allow.error()));
  if (allow->empty()) {
    return invalid("permissions.net.allow", "must list at least one host:port or CIDR; use net: none for no network",
                   node);
  }
  for (std::size_t i = 0; i < allow->size(); ++i) {
    if ((*allow)[i].empty()) {
      return invalid(item("permissions.net.allow", i), "must be a non-empty string such as example.com:443 or 127.0.0.0/8",
                     list[i]);
    }
    if (auto e = permissions::parse_allow_entry((*allow)[i]); !e) {
      return invalid(item("permissions.net.allow", i), e.error().message, list[i]);
    }
  }
  m.net.none = false;
  m.net.allow = std::move(*allow);
  return {};
}

Status parse_quotas(const Node& node, Quotas& q) {
  if (absent(node)) return {};
  if (auto s = check_map(node, "permissions.quotas", {"timeoutMs", "memoryMb", "cpuMs", "pids", "outputBytes", "diskMb"},
                         "a map of timeoutMs, memoryMb, cpuMs, pids, outputBytes, diskMb");
      !s) {
    return s;
  }
  struct Limit {
    std::string_view key;
    std::int64_t* out;
    std::int64_t max;
    std::string_view text;
  };
  const Limit limits[] = {
      {"timeoutMs", &q.timeout_ms, 86'400'000, "86400000 (24 h)"},
      {"memoryMb", &q.memory_mb, 1'048'576, "1048576 (1 TiB)"},
      {"cpuMs", &q.cpu_ms, 86'400'000, "86400000 (24 h)"},
      {"pids", &q.pids, 100'000, "100000"},
      {"outputBytes", &q.output_bytes, std::int64_t{1} << 30, "1073741824 (1 GiB)"},
      {"diskMb", &q.disk_mb, 1'048'576, "1048576 (1 TiB)"},
  };
  for (const Limit& l : limits) {
    Node v = value_of(node, l.key);
    if (absent(v)) continue;
    auto n = read_positive(v, child("permissions.quotas", l.key), l.max, l.text);
    if (!n) return tl::unexpected(std::move(n.error()));
    *l.out = *n;
  }
  return {};
}

Status parse_permissions(const Node& root, Manifest& m) {
  Node node = value_of(root, "permissions");
  if (absent(node)) return {};
  if (auto s = check_map(node, "permissions", {"env", "fs", "net", "quotas"}, "a map with env, fs, net and quotas");
      !s) {
    return s;
  }
  if (auto s = parse_env(value_of(node, "env"), m); !s) return s;
  if (auto s = parse_fs(value_of(node, "fs"), m); !s) return s;
  if (auto s = parse_net(value_of(node, "net"), m); !s) return s;
  return parse_quotas(value_of(node, "quotas"), m.quotas);
}

Result<ArtifactDecl> parse_artifact(const Node& node, const std::string& path) {
  if (auto s = check_map(node, path, {"id", "path", "contentType"}, "a map { id, path, contentType }"); !s) {
    return tl::unexpected(std::move(s.error()));
  }
  ArtifactDecl a;
  Node id = value_of(node, "id");
  if (absent(id)) return invalid(child(path, "id"), "is required, e.g. id: report", node);
  auto idv = read_string(id, child(path, "id"));
  if (!idv) return tl::unexpected(std::move(idv.error()));
  if (!valid_id(*idv)) return invalid(child(path, "id"), in_quotes(*idv) + " is not a valid artifact id; " + kIdRule, id);
  a.id = std::move(*idv);

  const std::string path_rule = "must be a relative path inside the task workspace, e.g. out/report-{taskId}.txt";
  Node p = value_of(node, "path");
  if (absent(p)) return invalid(child(path, "path"), "is required; " + path_rule, node);
  auto pv = read_string(p, child(path, "path"));
  if (!pv) return tl::unexpected(std::move(pv.error()));
  a.path = std::move(*pv);
  std::string expanded = expand_artifact_path(a, "t");
  if (auto open = expanded.find('{'); open != std::string::npos) {
    std::size_t close = expanded.find('}', open);
    std::string placeholder = expanded.substr(open, close == std::string::npos ? std::string::npos : close - open + 1);
    return invalid(child(path, "path"), "unknown placeholder " + in_quotes(placeholder) + "; only {taskId} is supported",
                   p);
  }
  if (!valid_relative_path(expanded)) return invalid(child(path, "path"), path_rule, p);

  a.content_type = kDefaultContentType;
  if (Node ct = value_of(node, "contentType"); !absent(ct)) {
    auto cv = read_string(ct, child(path, "contentType"));
    if (!cv) return tl::unexpected(std::move(cv.error()));
    if (!valid_content_type(*cv)) {
      return invalid(child(path, "contentType"),
                     in_quotes(*cv) + " is not a media type; use type/subtype, e.g. text/plain", ct);
    }
    a.content_type = std::move(*cv);
  }
  return a;
}

Status parse_artifacts(const Node& root, Manifest& m) {
  Node node = value_of(root, "artifacts");
  if (absent(node)) return {};
  if (!node.IsSequence()) return invalid("artifacts", "must be a list of { id, path, contentType }", node);
  std::set<std::string> ids;
  for (std::size_t i = 0; i < node.size(); ++i) {
    auto a = parse_artifact(node[i], item("artifacts", i));
    if (!a) return tl::unexpected(std::move(a.error()));
    if (!ids.insert(a->id).second) {
      return invalid(child(item("artifacts", i), "id"), "duplicate artifact id " + in_quotes(a->id), node[i]);
    }
    m.artifacts.push_back(std::move(*a));
  }
  return {};
}

Status parse_header(const Node& root, Manifest& m) {
  auto id = read_required(root, "id", "id: hello");
  if (!id) return tl::unexpected(std::move(id.error()));
  if (!valid_id(*id)) return invalid("id", in_quotes(*id) + " is not a valid id; " + kIdRule, value_of(root, "id"));
  m.id = std::move(*id);

  auto version = read_required(root, "version", "version: 1.0.0");
  if (!version) return tl::unexpected(std::move(version.error()));
  if (!valid_version(*version)) {
    return invalid("version",
                   in_quotes(*version) + " is not a valid version; use letters, digits, '.', '+' and '-' (at most 64 "
                                      "characters), e.g. 1.0.0",
                   value_of(root, "version"));
  }
  m.version = std::move(*version);

  Node caps = value_of(root, "capabilities");
  auto list = read_string_list(caps, "capabilities", "strings");
  if (!list) return tl::unexpected(std::move(list.error()));
  for (std::size_t i = 0; i < list->size(); ++i) {
    if ((*list)[i].empty()) return invalid(item("capabilities", i), "must be a non-empty string", caps[i]);
  }
  m.capabilities = std::move(*list);

  if (Node sandbox = value_of(root, "sandbox"); !absent(sandbox)) {
    if (sandbox.IsScalar() && sandbox.Scalar() == "process") {
      m.sandbox = SandboxMode::kProcess;
    } else if (sandbox.IsScalar() && sandbox.Scalar() == "none") {
      m.sandbox = SandboxMode::kNone;
    } else {
      return invalid("sandbox", "must be process (the default) or none", sandbox);
    }
  }
  return {};
}

Result<Manifest> parse_root(const Node& root) {
  if (!root.IsMap()) {
    return invalid("", "a manifest must be a YAML map with id, version and handlers", root);
  }
  if (auto s = check_map(root, "",
                         {"id", "version", "capabilities", "handlers", "permissions", "artifacts", "sandbox"},
                         "a map");
      !s) {
    return tl::unexpected(std::move(s.error()));
  }
  Manifest m;
  for (auto step : {parse_header, parse_handlers, parse_permissions, parse_artifacts}) {
    if (auto s = step(root, m); !s) return tl::unexpected(std::move(s.error()));
  }
  return m;
}

}  // namespace

Result<Manifest> parse_manifest(std::string_view yaml_text) {
  if (yaml_text.size() > kMaxManifestBytes) {
    return make_error(ErrorCode::kManifestInvalid,
                      "manifest is " + std::to_string(yaml_text.size()) + " bytes; the limit is 1 MiB");
  }
  // yaml-cpp reports syntax errors (and nesting deeper than 2000) as exceptions; they stop here.
  try {
    return parse_root(YAML::Load(std::string{yaml_text}));
  } catch (const YAML::ParserException& e) {
    std::string line = std::to_string(e.mark.line + 1);
    return make_error(ErrorCode::kManifestInvalid,
                      "invalid YAML at line " + line + ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg,
                      {{"line", line}});
  } catch (const YAML::Exception& e) {
    return make_error(ErrorCode::kManifestInvalid, std::string{"could not read the manifest: "} + e.what());
  }
}

Result<Manifest> load_manifest(const std::filesystem::path& plugin_root) {
  std::filesystem::path file = plugin_root / "kbfleet.yaml";
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return make_error(ErrorCode::kManifestInvalid, "no readable kbfleet.yaml in " + plugin_root.string(),
                      {{"file", file.string()}});
  }
  std::string text;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxManifestBytes) break;  // parse_manifest reports the size
  }
  if (in.bad()) {
    return make_error(ErrorCode::kManifestInvalid, "could not read " + file.string(), {{"file", file.string()}});
  }
  auto m = parse_manifest(text);
  if (!m) m.error().details["file"] = file.string();
  return m;
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxNameLength) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '_' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

bool valid_relative_path(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string_view::npos) return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return false;
    start = end + 1;
  }
  return true;
}

std::string expand_artifact_path(const ArtifactDecl& decl, std::string_view task_id) {
  constexpr std::string_view kPlaceholder = "{taskId}";
  std::string out;
  std::string_view rest = decl.path;
  for (std::size_t at; (at = rest.find(kPlaceholder)) != std::string_view::npos;) {
    out.append(rest.substr(0, at));
    out.append(task_id);
    rest.remove_prefix(at + kPlaceholder.size());
  }
  out.append(rest);
  return out;
}

}  // namespace kbfleet::manifest
