// Which cgroup version this host offers the worker, and where the worker's own cgroups are.
#include <charconv>

#include "worker/sandbox/cgroup.hpp"
#include "worker/sandbox/cgroup_fs.hpp"

namespace kbfleet::worker {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    auto at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  for (auto line : split(text, '\n')) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// mountinfo escapes space, tab, newline and backslash in paths as \ooo (proc(5)).
std::string unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 4, v, 8);
      if (ec == std::errc{} && end == s.data() + i + 4) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

struct Mount {
  std::string root;   // the part of the hierarchy mounted, "/" for all of it
  std::string point;  // where
  bool v2 = false;
  std::vector<std::string> options;  // v1: controllers among the super options
};

std::vector<Mount> cgroup_mounts(std::string_view mountinfo) {
  std::vector<Mount> out;
  for (auto line : lines(mountinfo)) {
    // "id parent major:minor root point options [optional...] - fstype source super-options"
    auto f = split(line, ' ');
    std::size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 3 >= f.size()) continue;  // no "- fstype source super-options" tail
    std::string_view fstype = f[dash + 1];
    if (fstype != "cgroup" && fstype != "cgroup2") continue;
    Mount m{unescape(f[3]), unescape(f[4]), fstype == "cgroup2", {}};
    for (auto opt : split(f[dash + 3], ',')) m.options.emplace_back(opt);
    out.push_back(std::move(m));
  }
  return out;
}

// `path` (from /proc/self/cgroup) as a directory under `m`, if `m` shows that part of the tree.
std::optional<std::string> under(const Mount& m, std::string_view path) {
  std::string_view root = m.root == "/" ? std::string_view{} : std::string_view{m.root};
  if (path.substr(0, root.size()) != root) return std::nullopt;
  std::string_view rest = path.substr(root.size());
  if (!rest.empty() && rest.front() != '/') return std::nullopt;  // "/a" is not under "/ab"
  if (rest == "/") rest = {};
  return m.point + std::string(rest);
}

}  // namespace

CgroupDirs resolve_cgroup_dirs(std::string_view proc_self_cgroup, std::string_view mountinfo) {
  CgroupDirs dirs;
  auto mounts = cgroup_mounts(mountinfo);
  for (auto line : lines(proc_self_cgroup)) {
    // "hierarchy-id:controller,list:path"; the path itself may contain ':'.
    auto first = line.find(':');
    auto second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    std::string_view controllers = line.substr(first + 1, second - first - 1);
    std::string_view path = line.substr(second + 1);
    if (line.substr(0, first) == "0" && controllers.empty()) {
      for (const auto& m : mounts) {
        if (!m.v2 || dirs.v2) continue;
        dirs.v2 = under(m, path);
      }
      continue;
    }
    for (auto controller : split(controllers, ',')) {
      if (controller.empty() || controller.find('=') != std::string_view::npos) continue;  // name=systemd
      for (const auto& m : mounts) {
        if (m.v2 || dirs.v1.count(std::string(controller))) continue;
        bool has = false;
        for (const auto& o : m.options) has = has || o == controller;
        if (!has) continue;
        if (auto dir = under(m, path)) dirs.v1.emplace(controller, *dir);
      }
    }
  }
  return dirs;
}

std::optional<std::int64_t> keyed_value(std::string_view text, std::string_view key) {
  for (auto line : lines(text)) {
    auto space = line.find(' ');
    if (space == std::string_view::npos || line.substr(0, space) != key) continue;
    auto value = line.substr(space + 1);
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc{} || end != value.data() + value.size()) return std::nullopt;
    return n;
  }
  return std::nullopt;
}

Result<std::unique_ptr<Cgroups>> probe_cgroups(const CgroupOptions& options) {
  auto self = cgroup_fs::read_file("/proc/self/cgroup");
  if (!self) return make_error(ErrorCode::kSandboxUnavailable, self.error().message, {{"layer", "cgroup"}});
  auto mountinfo = cgroup_fs::read_file("/proc/self/mountinfo");
  if (!mountinfo) return make_error(ErrorCode::kSandboxUnavailable, mountinfo.error().message, {{"layer", "cgroup"}});
  CgroupDirs dirs = resolve_cgroup_dirs(*self, *mountinfo);

  // v2 first: it is what production hosts run, and a controller is bound to one hierarchy only,
  // so on a hybrid host at most one of the two can offer memory and pids.
  std::string why_not_v2 = "no cgroup2 filesystem shows this process's cgroup";
  if (dirs.v2) {
    auto v2 = cgroup_fs::open_v2(*dirs.v2, options);
    if (v2) return v2;
    why_not_v2 = v2.error().message;
  }
  auto v1 = cgroup_fs::open_v1(dirs);
  if (v1) return v1;
  return make_error(ErrorCode::kSandboxUnavailable, "v2: " + why_not_v2 + "; v1: " + v1.error().message,
                    {{"layer", "cgroup"}});
}

}  // namespace kbfleet::worker
