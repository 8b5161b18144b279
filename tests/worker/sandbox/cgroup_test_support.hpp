#pragma once
// Helpers shared by the cgroup tests (cgroup_test.cpp, cgroup_pool_test.cpp): a launch spec joined
// to a task cgroup as prepare.cpp does it, a cgroup's directories, a file's text.
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "worker/executor/process.hpp"
#include "worker/sandbox/cgroup.hpp"

namespace kbfleet::worker::testing {

// Shell lines that start a process which leaves the handler's session and process group
// (`setsid`) and lives on (`sleep 100`: only a kill ends it), then wait for it to have escaped:
// it writes its pid after setsid, and the handler polls for that file, so a group kill cannot
// catch it before it escapes; only the cgroup kill can. Read its pid from escaped.pid. The poll
// gives up after 10 s and exits 97, so a broken escape fails the test instead of hanging it.
inline constexpr const char* kEscapeFromGroup =
    "setsid sh -c 'echo $$ > escaped.pid; exec sleep 100' &\n"
    "i=0; while [ ! -s escaped.pid ]; do i=$((i+1)); [ $i -le 1000 ] || exit 97; sleep 0.01; done\n";

// The spec with `cgroup` attached, as prepare.cpp does it.
inline LaunchSpec in_cgroup(LaunchSpec spec, std::shared_ptr<TaskCgroup> cgroup) {
  spec.join_cgroups = cgroup->procs_files();
  spec.cgroup = std::move(cgroup);
  return spec;
}

// The cgroup's directory in each hierarchy.
inline std::vector<std::filesystem::path> dirs_of(const TaskCgroup& cg) {
  std::vector<std::filesystem::path> out;
  for (const auto& procs : cg.procs_files()) out.push_back(std::filesystem::path(procs).parent_path());
  return out;
}

inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kbfleet::worker::testing
