#include "common/manifest/yaml_fields.hpp"

#include <charconv>
#include <set>

namespace kbfleet::manifest::yaml_fields {
namespace {

std::string join_names(std::initializer_list<std::string_view> names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// yaml-cpp reports "?" for plain scalars, "!" for quoted ones and the full tag for `!!int 5`.
bool plain_or_int_tag(const YAML::Node& node) {
  return node.Tag() == "?" || node.Tag() == "tag:yaml.org,2002:int";
}

}  // namespace

std::string child(std::string_view path, std::string_view key) {
  std::string out{path};
  if (!out.empty()) out += '.';
  out += key;
  return out;
}

std::string item(std::string_view path, std::size_t index) {
  std::string out{path};
  out += '[';
  out += std::to_string(index);
  out += ']';
  return out;
}

tl::unexpected<Error> invalid(std::string_view field, std::string_view what, const YAML::Node& at) {
  std::string message{field};
  if (!message.empty()) message += ": ";
  message += what;
  std::map<std::string, std::string> details{{"field", std::string{field}}};
  if (at.IsDefined() && !at.Mark().is_null()) details["line"] = std::to_string(at.Mark().line + 1);
  return make_error(ErrorCode::kManifestInvalid, std::move(message), std::move(details));
}

bool absent(const YAML::Node& node) { return !node.IsDefined() || node.IsNull(); }

YAML::Node value_of(const YAML::Node& map, std::string_view key) {
  if (!map.IsMap()) return YAML::Node{};
  for (const auto& kv : map) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) return kv.second;
  }
  return YAML::Node{};
}

Status check_keys_distinct(const YAML::Node& map, std::string_view path) {
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) return invalid(path, "map keys must be plain strings", kv.first);
    std::string key = kv.first.as<std::string>();
    if (!seen.insert(key).second) return invalid(child(path, key), "duplicate key", kv.first);
  }
  return {};
}

Status check_map(const YAML::Node& map, std::string_view path, std::initializer_list<std::string_view> known,
                 std::string_view shape) {
  if (!map.IsMap()) return invalid(path, std::string{"must be "} + std::string{shape}, map);
  if (auto s = check_keys_distinct(map, path); !s) return s;
  for (const auto& kv : map) {
    std::string key = kv.first.as<std::string>();
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) {
      return invalid(child(path, key), "unknown key; expected one of " + join_names(known), kv.first);
    }
  }
  return {};
}

Result<std::string> read_string(const YAML::Node& node, std::string_view path) {
  if (!node.IsScalar()) return invalid(path, "must be a string", node);
  return node.as<std::string>();
}

Result<std::vector<std::string>> read_string_list(const YAML::Node& node, std::string_view path,
                                                  std::string_view what) {
  std::vector<std::string> out;
  if (absent(node)) return out;
  if (!node.IsSequence()) return invalid(path, std::string{"must be a list of "} + std::string{what}, node);
  for (std::size_t i = 0; i < node.size(); ++i) {
    auto s = read_string(node[i], item(path, i));
    if (!s) return tl::unexpected(std::move(s.error()));
    out.push_back(std::move(*s));
  }
  return out;
}

Result<bool> read_bool(const YAML::Node& node, std::string_view path) {
  if (node.IsScalar() && node.Tag() == "?") {
    const std::string& v = node.Scalar();
    if (v == "true" || v == "True" || v == "TRUE") return true;
    if (v == "false" || v == "False" || v == "FALSE") return false;
  }
  return invalid(path, "must be true or false", node);
}

Result<std::int64_t> read_positive(const YAML::Node& node, std::string_view path, std::int64_t max,
                                   std::string_view limit_text) {
  std::string expect = "must be a positive integer at most " + std::string{limit_text};
  if (!node.IsScalar() || !plain_or_int_tag(node)) return invalid(path, expect, node);
  const std::string& text = node.Scalar();
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  bool digits_only = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits_only || end != text.data() + text.size()) return invalid(path, expect + ", got '" + text + "'", node);
  if (ec == std::errc::result_out_of_range || value > max || value < 1) {
    return invalid(path, expect + ", got " + text, node);
  }
  return value;
}

}  // namespace kbfleet::manifest::yaml_fields
