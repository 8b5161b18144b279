#include "common/log/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace kbfleet::log {

void init(std::string_view process_name, std::string_view level) {
  // _mt: the worker's task cgroup pool logs from its own thread (worker/sandbox/cgroup_pool.hpp).
  auto logger = spdlog::stderr_logger_mt(std::string(process_name));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n %v");
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") lvl = spdlog::level::info;
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace kbfleet::log
