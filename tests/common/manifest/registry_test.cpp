#include "common/manifest/registry.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/temp_dir.hpp"

namespace kbfleet::manifest {
namespace {

namespace fs = std::filesystem;

using kbfleet::test::TempDir;

void write_file(const fs::path& file, const std::string& text, bool executable = false) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
  if (executable) fs::permissions(file, fs::perms::owner_all, fs::perm_options::add);
}

std::string manifest_text(const std::string& id, const std::string& version, const std::string& exec = "bin/run.sh") {
  return "id: " + id + "\nversion: " + version + "\nhandlers:\n  run: { exec: " + exec + " }\n";
}

// A plugin root with a manifest and an executable bin/run.sh.
void make_plugin(const fs::path& root, const std::string& id, const std::string& version) {
  write_file(root / "kbfleet.yaml", manifest_text(id, version));
  write_file(root / "bin/run.sh", "#!/bin/sh\necho ok\n", /*executable=*/true);
}

const PluginEntry& only_entry(const Registry& reg) {
  REQUIRE(reg.entries().size() == 1);
  return reg.entries()[0];
}

TEST_CASE("a scan finds flat and versioned plugins, sorted by id and then by version", "[manifest][registry]") {
  TempDir dir;
  make_plugin(dir.path() / "hello", "hello", "1.0.0");
  make_plugin(dir.path() / "build/1.9.2", "build", "1.9.2");
  make_plugin(dir.path() / "build/1.10.0", "build", "1.10.0");
  make_plugin(dir.path() / "build/1.2.0", "build", "1.2.0");

  auto reg = Registry::scan(dir.path());
  REQUIRE(reg.has_value());
  const auto& e = reg->entries();
  REQUIRE(e.size() == 4);
  CHECK(e[0].id == "build");
  CHECK(e[0].version == "1.2.0");
  CHECK(e[1].version == "1.9.2");
  CHECK(e[2].version == "1.10.0");
  CHECK(e[3].id == "hello");
  CHECK(e[3].version == "1.0.0");
  CHECK(e[3].root == dir.path() / "hello");
  for (const auto& entry : e) {
    CHECK(entry.manifest.has_value());
    CHECK_FALSE(entry.error.has_value());
  }

  SECTION("an empty version asks for the highest") {
    const PluginEntry* latest = reg->find("build", "");
    REQUIRE(latest != nullptr);
    CHECK(latest->version == "1.10.0");
    CHECK(latest->root == dir.path() / "build/1.10.0");
  }
  SECTION("an exact version") {
    const PluginEntry* v = reg->find("build", "1.9.2");
    REQUIRE(v != nullptr);
    CHECK(v->manifest->version == "1.9.2");
  }
  SECTION("unknown ids and versions are not found") {
    CHECK(reg->find("nope", "") == nullptr);
    CHECK(reg->find("build", "3.0.0") == nullptr);
    CHECK(reg->find_any("nope") == nullptr);
  }
}

TEST_CASE("an invalid manifest stays in the registry with its error", "[manifest][registry]") {
  TempDir dir;
  write_file(dir.path() / "broken/kbfleet.yaml", manifest_text("broken", "1.0.0", "../escape.sh"));
  write_file(dir.path() / "escape.sh", "#!/bin/sh\n", /*executable=*/true);
  make_plugin(dir.path() / "good", "good", "1.0.0");

  auto reg = Registry::scan(dir.path());
  REQUIRE(reg.has_value());
  REQUIRE(reg->entries().size() == 2);
  CHECK(reg->find("broken", "") == nullptr);
  const PluginEntry* broken = reg->find_any("broken");
  REQUIRE(broken != nullptr);
  CHECK_FALSE(broken->manifest.has_value());
  REQUIRE(broken->error.has_value());
  CHECK(broken->error->code == ErrorCode::kManifestInvalid);
  CHECK(broken->error->message == "handlers.run.exec: must be a relative path inside the plugin, e.g. bin/greet.sh");
  CHECK(broken->error->details.at("field") == "handlers.run.exec");
  CHECK(broken->error->details.at("file") == (dir.path() / "broken/kbfleet.yaml").string());
  CHECK(broken->id == "broken");
  CHECK(broken->version.empty());
  CHECK(reg->find("good", "") != nullptr);

  SECTION("a YAML syntax error in a version directory keeps the directory's version") {
    write_file(dir.path() / "syntax/2.0.0/kbfleet.yaml", "id: syntax\nversion: [2.0.0\n");
    auto again = Registry::scan(dir.path());
    REQUIRE(again.has_value());
    const PluginEntry* s = again->find_any("syntax");
    REQUIRE(s != nullptr);
    CHECK(s->version == "2.0.0");
    REQUIRE(s->error.has_value());
    CHECK(s->error->message.rfind("invalid YAML at line ", 0) == 0);
  }
}

TEST_CASE("a manifest id or version that differs from its directory is invalid", "[manifest][registry]") {
  TempDir dir;
  SECTION("id") {
    make_plugin(dir.path() / "hello", "other", "1.0.0");
    auto reg = Registry::scan(dir.path());
    REQUIRE(reg.has_value());
    const PluginEntry& e = only_entry(*reg);
    CHECK(e.id == "hello");
    CHECK(e.version == "1.0.0");
    REQUIRE(e.error.has_value());
    CHECK(e.error->code == ErrorCode::kManifestInvalid);
    CHECK(e.error->message == "id: 'other' does not match its directory 'hello'");
    CHECK(e.error->details.at("field") == "id");
  }
  SECTION("version") {
    make_plugin(dir.path() / "hello/1.0.0", "hello", "1.0.1");
    auto reg = Registry::scan(dir.path());
    REQUIRE(reg.has_value());
    const PluginEntry& e = only_entry(*reg);
    CHECK(e.version == "1.0.0");
    REQUIRE(e.error.has_value());
    CHECK(e.error->message == "version: '1.0.1' does not match its directory '1.0.0'");
    CHECK(e.error->details.at("field") == "version");
    CHECK(reg->find("hello", "") == nullptr);
  }
}

TEST_CASE("a handler exec must be an executable regular file inside the plugin", "[manifest][registry]") {
  TempDir dir;
  fs::path root = dir.path() / "hello";
  write_file(root / "kbfleet.yaml", manifest_text("hello", "1.0.0"));
  auto scan_error = [&]() -> std::string {
    auto reg = Registry::scan(dir.path());
    REQUIRE(reg.has_value());
    const PluginEntry& e = only_entry(*reg);
    REQUIRE(e.error.has_value());
    CHECK(e.error->code == ErrorCode::kManifestInvalid);
    CHECK(e.error->details.at("field") == "handlers.run.exec");
    return e.error->message;
  };

  SECTION("missing") {
    CHECK(scan_error() == "handlers.run.exec: 'bin/run.sh' does not exist in the plugin directory");
  }
  SECTION("not executable") {
    write_file(root / "bin/run.sh", "#!/bin/sh\n");
    fs::permissions(root / "bin/run.sh", fs::perms::owner_read | fs::perms::owner_write);
    CHECK(scan_error() == "handlers.run.exec: 'bin/run.sh' is not executable; run chmod +x bin/run.sh");
  }
  SECTION("a directory") {
    fs::create_directories(root / "bin/run.sh");
    CHECK(scan_error() == "handlers.run.exec: 'bin/run.sh' is not a regular file");
  }
  const std::string outside = "handlers.run.exec: 'bin/run.sh' resolves outside the plugin directory; symlinks must "
                              "stay inside it";
  SECTION("a symlink to a program outside the plugin") {
    fs::create_directories(root / "bin");
    fs::create_symlink("/bin/sh", root / "bin/run.sh");
    CHECK(scan_error() == outside);
  }
  SECTION("a symlinked directory into a sibling whose name shares the prefix") {
    // "/tmp/x/hello-evil/run.sh" starts with the string "/tmp/x/hello" but is not inside it.
    write_file(dir.path() / "hello-evil/run.sh", "#!/bin/sh\n", /*executable=*/true);
    fs::create_directory_symlink(dir.path() / "hello-evil", root / "bin");
    auto reg = Registry::scan(dir.path());
    REQUIRE(reg.has_value());
    const PluginEntry* e = reg->find_any("hello");
    REQUIRE(e != nullptr);
    REQUIRE(e->error.has_value());
    CHECK(e->error->message == outside);
  }
  SECTION("a symlink that stays inside the plugin is accepted") {
    write_file(root / "libexec/real.sh", "#!/bin/sh\n", /*executable=*/true);
    fs::create_directories(root / "bin");
    fs::create_symlink("../libexec/real.sh", root / "bin/run.sh");
    auto reg = Registry::scan(dir.path());
    REQUIRE(reg.has_value());
    CHECK(only_entry(*reg).manifest.has_value());
  }
}

TEST_CASE("a scan skips hidden directories and files and reports empty plugin directories", "[manifest][registry]") {
  TempDir dir;
  make_plugin(dir.path() / ".staging/hello", "hello", "1.0.0");
  write_file(dir.path() / "README.md", "plugins live here\n");
  fs::create_directories(dir.path() / "empty");

  auto reg = Registry::scan(dir.path());
  REQUIRE(reg.has_value());
  const PluginEntry& e = only_entry(*reg);
  CHECK(e.id == "empty");
  REQUIRE(e.error.has_value());
  CHECK(e.error->code == ErrorCode::kManifestInvalid);
  CHECK(e.error->message ==
        "no kbfleet.yaml in " + (dir.path() / "empty").string() + " and no version directories holding one");

  SECTION("a version directory without a manifest is an invalid entry of that version") {
    make_plugin(dir.path() / "empty/1.0.0", "empty", "1.0.0");
    fs::create_directories(dir.path() / "empty/2.0.0");
    auto again = Registry::scan(dir.path());
    REQUIRE(again.has_value());
    REQUIRE(again->entries().size() == 2);
    CHECK(again->entries()[1].version == "2.0.0");
    REQUIRE(again->entries()[1].error.has_value());
    CHECK(again->entries()[1].error->message ==
          "no readable kbfleet.yaml in " + (dir.path() / "empty/2.0.0").string());
    CHECK(again->find("empty", "")->version == "1.0.0");
  }
}

TEST_CASE("scanning a directory that does not exist is IO_ERROR", "[manifest][registry]") {
  TempDir dir;
  auto reg = Registry::scan(dir.path() / "missing");
  REQUIRE_FALSE(reg.has_value());
  CHECK(reg.error().code == ErrorCode::kIoError);
  CHECK(reg.error().message == "opendir(" + (dir.path() / "missing").string() + "): No such file or directory");
}

TEST_CASE("compare_versions orders numbers by value, pre-releases first, then bytes", "[manifest][registry]") {
  CHECK(compare_versions("1.10.0", "1.9.2") == 1);
  CHECK(compare_versions("1.9.2", "1.10.0") == -1);
  CHECK(compare_versions("1.0.0", "1.0.0") == 0);
  CHECK(compare_versions("2", "1.99.99") == 1);
  CHECK(compare_versions("1.0.0-rc.1", "1.0.0") == -1);
  CHECK(compare_versions("1.0.0-rc.2", "1.0.0-rc.10") == -1);
  CHECK(compare_versions("1.0.0-alpha", "1.0.0-beta") == -1);
  CHECK(compare_versions("1.0.0-1", "1.0.0-alpha") == -1);
  CHECK(compare_versions("1.0.0-alpha", "1.0.0-alpha.1") == -1);
  CHECK(compare_versions("1.0", "1.0.0") == -1);
  CHECK(compare_versions("1.0.0+b2", "1.0.0+b1") == 1);
  CHECK(compare_versions("01.0", "1.0") == -1);
  CHECK(compare_versions("99999999999999999999999.0", "1.0") == 1);
  CHECK(compare_versions("1.x", "1.2") == 1);
  CHECK(compare_versions("", "0") == -1);
}

TEST_CASE("the example plugins and the test fixtures scan as documented", "[manifest][registry]") {
  auto examples = Registry::scan(fs::path{KBFLEET_SOURCE_DIR} / "examples/plugins");
  REQUIRE(examples.has_value());
  REQUIRE(examples->entries().size() == 2);
  for (const PluginEntry& e : examples->entries()) {
    INFO(e.id << ": " << (e.error ? e.error->message : "ok"));
    CHECK(e.manifest.has_value());
  }
  const PluginEntry* build = examples->find("build", "");
  REQUIRE(build != nullptr);
  REQUIRE(build->manifest->artifacts.size() == 1);
  CHECK(build->manifest->artifacts[0].content_type == "text/plain");

  auto fixtures = Registry::scan(fs::path{KBFLEET_SOURCE_DIR} / "tests/fixtures/plugins");
  REQUIRE(fixtures.has_value());
  std::vector<std::string> ids;
  for (const PluginEntry& e : fixtures->entries()) {
    ids.push_back(e.id);
    INFO(e.id << ": " << (e.error ? e.error->message : "ok"));
    CHECK(e.manifest.has_value() == (e.id != "broken"));
  }
  CHECK(ids == std::vector<std::string>{"big", "broken", "chatty", "envdump", "fail", "gpu", "noop", "slow", "stubborn", "trusted"});
  const PluginEntry* broken = fixtures->find_any("broken");
  REQUIRE(broken != nullptr);
  REQUIRE(broken->error.has_value());
  CHECK(broken->error->details.at("field") == "handlers.run.exec");
  CHECK(fixtures->find("stubborn", "")->manifest->quotas.timeout_ms == 1500);
  CHECK(fixtures->find("envdump", "")->manifest->env == std::vector<std::string>{"LANG", "CI_*"});
}

}  // namespace
}  // namespace kbfleet::manifest
