#pragma once
// A per-test directory from mkdtemp, removed with everything in it when the test ends.
// Header-only, so unit tests that link nothing of tests/support can use it.
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include <catch2/catch.hpp>

namespace kbfleet::test {

class TempDir {
 public:
  // Under `base`, else $TMPDIR, else /tmp (a sandboxed task gets a private /tmp: tests that
  // bind a directory into a sandbox pass "/var/tmp").
  explicit TempDir(const char* base = nullptr, std::string_view prefix = "kbfleet-test") {
    if (base == nullptr) base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + std::string(prefix) + "-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace kbfleet::test
