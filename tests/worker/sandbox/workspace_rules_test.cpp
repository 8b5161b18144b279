// workspace_rules(): manifest globs to Landlock rules. Pure, so every glob shape is tested here;
// landlock_test.cpp checks the rules against the kernel.
#include <catch2/catch.hpp>

#include "worker/sandbox/landlock.hpp"

namespace kbfleet::worker {
namespace {

const std::filesystem::path kWs = "/srv/ws/task-7";

std::string show(const std::vector<FsRule>& rules) {
  std::string out;
  for (const auto& r : rules) {
    const char* a = r.access == FsAccess::kRead          ? "r"
                    : r.access == FsAccess::kReadExec    ? "rx"
                    : r.access == FsAccess::kReadWrite   ? "rw"
                                                         : "rwx";
    out += r.path.string() + ":" + a + ";";
  }
  return out;
}

TEST_CASE("a glob grants its longest leading directory without glob characters", "[sandbox][landlock]") {
  CHECK(show(workspace_rules(kWs, {"out/**"}, {})) == "/srv/ws/task-7/out:r;");
  CHECK(show(workspace_rules(kWs, {"data/*.json"}, {})) == "/srv/ws/task-7/data:r;");
  CHECK(show(workspace_rules(kWs, {"**"}, {})) == "/srv/ws/task-7:r;");
  CHECK(show(workspace_rules(kWs, {"*.txt"}, {})) == "/srv/ws/task-7:r;");
  CHECK(show(workspace_rules(kWs, {"a/b?/c"}, {})) == "/srv/ws/task-7/a:r;");
  CHECK(show(workspace_rules(kWs, {"a/[xy]/c"}, {})) == "/srv/ws/task-7/a:r;");
  CHECK(show(workspace_rules(kWs, {"src/{a,b}/*.c"}, {})) == "/srv/ws/task-7/src:r;");
  CHECK(show(workspace_rules(kWs, {"deep/er/dir/**/*.o"}, {})) == "/srv/ws/task-7/deep/er/dir:r;");
}

TEST_CASE("a glob without glob characters grants exactly its literal path", "[sandbox][landlock]") {
  CHECK(show(workspace_rules(kWs, {"logs/today.txt"}, {})) == "/srv/ws/task-7/logs/today.txt:r;");
  CHECK(show(workspace_rules(kWs, {"out"}, {})) == "/srv/ws/task-7/out:r;");
  CHECK(show(workspace_rules(kWs, {"out/"}, {})) == "/srv/ws/task-7/out:r;");
  CHECK(show(workspace_rules(kWs, {"./out/x"}, {})) == "/srv/ws/task-7/out/x:r;");
}

TEST_CASE("read globs give read access and write globs read-write-execute", "[sandbox][landlock]") {
  CHECK(show(workspace_rules(kWs, {"in/**"}, {"out/**"})) == "/srv/ws/task-7/in:r;/srv/ws/task-7/out:rwx;");
  CHECK(show(workspace_rules(kWs, {}, {})).empty());
}

TEST_CASE("globs are split by path component, never by string prefix", "[sandbox][landlock]") {
  // "out*" must not become <ws>/out: the glob character is in the first component.
  CHECK(show(workspace_rules(kWs, {"out*/x"}, {})) == "/srv/ws/task-7:r;");
  CHECK(show(workspace_rules(kWs, {"output/**", "out/**"}, {})) ==
        "/srv/ws/task-7/output:r;/srv/ws/task-7/out:r;");
}

TEST_CASE("a path named by several globs appears once with the union of their access",
          "[sandbox][landlock]") {
  CHECK(show(workspace_rules(kWs, {"out/*.log", "out/**"}, {"out/bin/**", "out/*.o"})) ==
        "/srv/ws/task-7/out:rwx;/srv/ws/task-7/out/bin:rwx;");
  CHECK(show(workspace_rules(kWs, {"**", "*.txt"}, {})) == "/srv/ws/task-7:r;");
}

}  // namespace
}  // namespace kbfleet::worker
