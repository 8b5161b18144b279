#include "broker/tasks/task_key.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "common/errors/error.hpp"

namespace kbfleet::broker {

TaskKey new_task_key() {
  // Bytes are used once and never reused. (A process that forked would share the pool with its
  // child; the broker never forks.)
  thread_local unsigned char pool[4096];
  thread_local std::size_t used = sizeof pool;
  if (used + sizeof(TaskKey) > sizeof pool) {
    std::size_t got = 0;
    while (got < sizeof pool) {
      ssize_t n = ::getrandom(pool + got, sizeof pool - got, 0);
      if (n < 0 && errno == EINTR) continue;
      KB_CHECK(n > 0);  // getrandom cannot fail once the pool is initialised
      got += static_cast<std::size_t>(n);
    }
    used = 0;
  }
  TaskKey k;
  std::memcpy(&k.hi, pool + used, 8);
  std::memcpy(&k.lo, pool + used + 8, 8);
  used += sizeof(TaskKey);
  return k;
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool parse_half(std::string_view hex16, std::uint64_t& out) {
  out = 0;
  for (char c : hex16) {
    const int d = hex_digit(c);
    if (d < 0) return false;
    out = (out << 4) | static_cast<std::uint64_t>(d);
  }
  return true;
}

}  // namespace

std::optional<TaskKey> parse_task_key(std::string_view id) {
  TaskKey k;
  if (id.size() != 32 || !parse_half(id.substr(0, 16), k.hi) || !parse_half(id.substr(16), k.lo)) return std::nullopt;
  return k;
}

TaskIdHex::TaskIdHex(const TaskKey& k) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    text_[15 - i] = kHex[(k.hi >> (4 * i)) & 0xf];
    text_[31 - i] = kHex[(k.lo >> (4 * i)) & 0xf];
  }
}

std::string to_hex(const TaskKey& k) { return TaskIdHex(k).str(); }

}  // namespace kbfleet::broker
