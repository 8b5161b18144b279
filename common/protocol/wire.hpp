#pragma once
// msgpack encoding and bounded decoding of message bodies. Every body is a msgpack map with
// string keys (docs/protocol.md). Decoding never trusts sizes from the peer: the unpacker runs
// with explicit limits, so a 9-byte "map32 of 4 billion entries" is an error, not an allocation.
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "common/errors/error.hpp"

namespace kbfleet::protocol {

struct DecodeLimits {
  std::size_t max_bytes = 8u << 20;  // a body larger than this is refused before unpacking
  std::size_t array = 100000;
  std::size_t map = 10000;
  std::size_t str = 4u << 20;
  std::size_t bin = 4u << 20;
  std::size_t ext = 0;
  std::size_t depth = 32;
};

// A read-only view of a msgpack map. Getters for required fields return PROTOCOL_ERROR naming
// the field; *_or variants return the default when the field is absent or nil.
class MapView {
 public:
  explicit MapView(const msgpack::object* map) : map_(map) {}

  const msgpack::object* get(std::string_view key) const;  // nullptr if absent
  bool has(std::string_view key) const { return get(key) != nullptr; }

  Result<std::string_view> str(std::string_view key) const;
  std::string_view str_or(std::string_view key, std::string_view dflt) const;
  Result<std::int64_t> i64(std::string_view key) const;
  std::int64_t i64_or(std::string_view key, std::int64_t dflt) const;
  double f64_or(std::string_view key, double dflt) const;
  bool bool_or(std::string_view key, bool dflt) const;
  Result<std::vector<std::string>> str_list_or_empty(std::string_view key) const;
  Result<std::map<std::string, std::string>> str_map_or_empty(std::string_view key) const;
  // A nested map, or PROTOCOL_ERROR if present and not a map; nullopt if absent/nil.
  Result<std::optional<MapView>> map_or_none(std::string_view key) const;
  // Array elements; PROTOCOL_ERROR if present and not an array; empty if absent.
  Result<std::vector<const msgpack::object*>> array_or_empty(std::string_view key) const;
  // The value re-encoded as msgpack bytes (to forward without interpreting); empty if absent.
  std::string raw(std::string_view key) const;

  const msgpack::object* object() const { return map_; }

 private:
  const msgpack::object* map_;
};

// An owned decoded body.
class Body {
 public:
  // Bounded decode of one msgpack map occupying exactly `bytes`.
  static Result<Body> decode(std::string_view bytes, const DecodeLimits& limits = {});
  MapView view() const { return MapView(&handle_.get()); }

 private:
  msgpack::object_handle handle_;
};

// Streaming msgpack writer. Containers are counted for you: begin_map()/end_map() write a
// map32/array32 header and patch the count when closed (valid msgpack, read by every decoder).
class Writer {
 public:
  // Room for a typical message up front: one allocation per Writer, not a string growing by
  // doubling (the broker builds several bodies per task; docs/performance.md).
  Writer() { buf_.resize(kInitialBytes); }
  Writer& begin_map();
  Writer& end_map();
  Writer& begin_array();
  Writer& end_array();
  Writer& key(std::string_view k);

  Writer& str(std::string_view v);
  Writer& i64(std::int64_t v);
  Writer& f64(double v);
  Writer& boolean(bool v);
  Writer& nil();
  Writer& bin(std::string_view bytes);
  // Appends already-encoded msgpack (one value). Empty `msgpack` writes nil.
  Writer& raw(std::string_view msgpack);

  Writer& kv(std::string_view k, std::string_view v) { return key(k).str(v); }
  Writer& kv(std::string_view k, const char* v) { return key(k).str(v); }
  Writer& kv(std::string_view k, const std::string& v) { return key(k).str(v); }
  Writer& kv(std::string_view k, std::int64_t v) { return key(k).i64(v); }
  Writer& kv(std::string_view k, int v) { return key(k).i64(v); }
  Writer& kv(std::string_view k, bool v) { return key(k).boolean(v); }
  Writer& kv(std::string_view k, double v) { return key(k).f64(v); }
  Writer& kv_list(std::string_view k, const std::vector<std::string>& v);
  Writer& kv_map(std::string_view k, const std::map<std::string, std::string>& v);

  // The encoded bytes; all containers must be closed.
  std::string take();
  // The encoded bytes, kept (all containers must be closed); reset() empties the writer but keeps
  // its buffer's capacity, for one writer reused per message without an allocation each.
  std::string_view bytes() const;
  void reset() {
    len_ = 0;
    open_ = OpenStack();
  }
  std::size_t size() const { return len_; }  // bytes written so far

 private:
  void count_value();
  void put_str(std::string_view v);
  void put_sized(std::string_view v, char tag8);
  // buf_ is kept at full size and len_ bytes of it are written: an append is a bounds check and
  // a memcpy, inline, not a libstdc++ call (std::string::append) per key and value.
  char* room(std::size_t n) {
    if (buf_.size() - len_ < n) grow(n);
    char* p = buf_.data() + len_;
    len_ += n;
    return p;
  }
  void put(const char* p, std::size_t n) {
    if (n != 0) std::memcpy(room(n), p, n);
  }
  void grow(std::size_t n);
  static constexpr std::size_t kInitialBytes = 256;
  static constexpr std::size_t kMaxDepth = 32;  // our own messages nest at most ~6 deep
  struct Open {
    std::size_t header_at;
    std::uint32_t count;
    bool is_map;
  };
  // The open containers, innermost last; fixed capacity, so writing allocates nothing else.
  class OpenStack {
   public:
    bool empty() const { return n_ == 0; }
    Open& back() { return items_[n_ - 1]; }
    void push_back(const Open& o) {
      KB_CHECK(n_ < kMaxDepth);
      items_[n_++] = o;
    }
    void pop_back() { --n_; }

   private:
    Open items_[kMaxDepth];
    std::size_t n_ = 0;
  };
  std::string buf_;
  std::size_t len_ = 0;
  OpenStack open_;
};

// Converts a msgpack object to a JSON text (for CLI output and handler stdin).
std::string to_json(const msgpack::object& obj);
// Converts JSON text to msgpack bytes; INVALID_ARGUMENT naming the position on bad JSON.
Result<std::string> json_to_msgpack(std::string_view json);
// msgpack bytes -> JSON text; PROTOCOL_ERROR if not valid msgpack.
Result<std::string> msgpack_to_json(std::string_view msgpack);

}  // namespace kbfleet::protocol
