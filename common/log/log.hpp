#pragma once
// One spdlog logger per process, writing "time level event key=value" lines to stderr
// (stdout is reserved for machine-readable output such as bound endpoints).
#include <string_view>

#include <spdlog/spdlog.h>

namespace kbfleet::log {

// level: trace|debug|info|warn|error; unknown names fall back to info.
void init(std::string_view process_name, std::string_view level);

}  // namespace kbfleet::log
