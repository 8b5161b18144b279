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

// Lookup tables, built at compile time: ids are formatted and parsed several times per task
// (topics, events, replies, lookups), and a table costs a load per byte where the digit
// arithmetic cost a branch per character.
struct HexTables {
  char pairs[512];          // byte b -> its two lowercase hex digits at [2b], [2b+1]
  signed char digit[256];   // character -> its value, or -1
};

constexpr HexTables make_hex_tables() {
  constexpr char kHex[] = "0123456789abcdef";
  HexTables t{};
  for (int b = 0; b < 256; ++b) {
    t.pairs[2 * b] = kHex[b >> 4];
    t.pairs[2 * b + 1] = kHex[b & 0xf];
    t.digit[b] = -1;
  }
  for (int d = 0; d < 16; ++d) t.digit[static_cast<unsigned char>(kHex[d])] = static_cast<signed char>(d);
  return t;
}

constexpr HexTables kHexTables = make_hex_tables();

void put_half(char* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    std::memcpy(out + 2 * i, &kHexTables.pairs[2 * (v & 0xff)], 2);
    v >>= 8;
  }
}

bool parse_half(std::string_view hex16, std::uint64_t& out) {
  out = 0;
  int bad = 0;
  for (char c : hex16) {
    const int d = kHexTables.digit[static_cast<unsigned char>(c)];
    bad |= d;  // any -1 sets the sign bit
    out = (out << 4) | static_cast<std::uint64_t>(d & 0xf);
  }
  return bad >= 0;
}

}  // namespace

std::optional<TaskKey> parse_task_key(std::string_view id) {
  TaskKey k;
  if (id.size() != 32 || !parse_half(id.substr(0, 16), k.hi) || !parse_half(id.substr(16), k.lo)) return std::nullopt;
  return k;
}

TaskIdHex::TaskIdHex(const TaskKey& k) {
  put_half(text_, k.hi);
  put_half(text_ + 16, k.lo);
}

std::string to_hex(const TaskKey& k) { return TaskIdHex(k).str(); }

}  // namespace kbfleet::broker
