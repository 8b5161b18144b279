#pragma once
// Helpers shared by the CAS tests (cas_test.cpp, blob_writer_test.cpp): a per-test directory and
// deterministic, non-repeating file contents.
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include <catch2/catch.hpp>

namespace kbfleet::broker::testing {

// A per-test directory from mkdtemp, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "kbfleet-cas") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).native();
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

inline std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

}  // namespace kbfleet::broker::testing
