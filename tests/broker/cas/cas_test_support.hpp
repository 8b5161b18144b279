#pragma once
// Helpers shared by the CAS tests (cas_test.cpp, blob_writer_test.cpp): a per-test directory and
// deterministic, non-repeating file contents.
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "tests/support/temp_dir.hpp"

namespace kbfleet::broker::testing {

using TempDir = kbfleet::test::TempDir;

inline std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

}  // namespace kbfleet::broker::testing
