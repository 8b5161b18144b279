#pragma once
// Internal to common/manifest: typed reads of yaml-cpp nodes that name the dotted field on every
// failure. Nothing here throws: yaml-cpp conversions are only called on nodes whose type was
// checked first. A null node (`key:` or `key: ~`) reads as absent.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "common/errors/error.hpp"

namespace kbfleet::manifest::yaml_fields {

// "a.b" + "c" -> "a.b.c"; "" + "c" -> "c".
std::string child(std::string_view path, std::string_view key);
// "a.b" + 2 -> "a.b[2]".
std::string item(std::string_view path, std::size_t index);

// MANIFEST_INVALID "<field>: <what>" with details field and, when the node has a position, line.
tl::unexpected<Error> invalid(std::string_view field, std::string_view what, const YAML::Node& at = {});

// True if the node is missing or null.
bool absent(const YAML::Node& node);
// The value of `key` in a map checked by check_map, or a null node when absent. (yaml-cpp's
// const operator[] returns a "zombie" node that throws on most calls; this never does.)
YAML::Node value_of(const YAML::Node& map, std::string_view key);

// Checks that `map` is a map whose keys are distinct strings from `known`; an unknown key is
// "<path>.<key>: unknown key; expected one of a, b, c". `shape` describes the map when it is not
// one (e.g. "a map with read and write lists").
[[nodiscard]] Status check_map(const YAML::Node& map, std::string_view path,
                               std::initializer_list<std::string_view> known, std::string_view shape);
// Checks that `map` is a map with distinct string keys (any names).
[[nodiscard]] Status check_keys_distinct(const YAML::Node& map, std::string_view path);

[[nodiscard]] Result<std::string> read_string(const YAML::Node& node, std::string_view path);
// A list of strings; `what` completes "must be a list of ..." when it is not one.
[[nodiscard]] Result<std::vector<std::string>> read_string_list(const YAML::Node& node,
                                                                std::string_view path,
                                                                std::string_view what);
[[nodiscard]] Result<bool> read_bool(const YAML::Node& node, std::string_view path);
// A plain (unquoted) decimal integer in [1, max]; `limit_text` explains max, e.g. "86400000 (24 h)".
[[nodiscard]] Result<std::int64_t> read_positive(const YAML::Node& node, std::string_view path,
                                                 std::int64_t max, std::string_view limit_text);

}  // namespace kbfleet::manifest::yaml_fields
