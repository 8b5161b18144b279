#include "common/protocol/wire.hpp"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

namespace kbfleet::protocol {
namespace {

tl::unexpected<Error> field_error(std::string_view key, std::string_view what) {
  return make_error(ErrorCode::kProtocolError,
                    "field '" + std::string(key) + "' " + std::string(what),
                    {{"field", std::string(key)}});
}

bool is_nil(const msgpack::object* o) { return o == nullptr || o->type == msgpack::type::NIL; }

void put_be32(std::string& buf, std::size_t at, std::uint32_t v) {
  buf[at + 0] = static_cast<char>((v >> 24) & 0xff);
  buf[at + 1] = static_cast<char>((v >> 16) & 0xff);
  buf[at + 2] = static_cast<char>((v >> 8) & 0xff);
  buf[at + 3] = static_cast<char>(v & 0xff);
}

struct StringStream {
  std::string* out;
  void write(const char* p, std::size_t n) { out->append(p, n); }
};

}  // namespace

// ---- MapView -------------------------------------------------------------------------------

const msgpack::object* MapView::get(std::string_view key) const {
  if (map_ == nullptr || map_->type != msgpack::type::MAP) return nullptr;
  const auto& m = map_->via.map;
  for (std::uint32_t i = 0; i < m.size; ++i) {
    const auto& k = m.ptr[i].key;
    // The first byte before memcmp: a message's keys mostly differ there, and this runs for
    // every field read of every message.
    if (k.type == msgpack::type::STR && k.via.str.size == key.size() &&
        (key.empty() || (k.via.str.ptr[0] == key[0] && std::memcmp(k.via.str.ptr, key.data(), key.size()) == 0))) {
      return &m.ptr[i].val;
    }
  }
  return nullptr;
}

Result<std::string_view> MapView::str(std::string_view key) const {
  const auto* o = get(key);
  if (is_nil(o)) return field_error(key, "is missing");
  if (o->type != msgpack::type::STR) return field_error(key, "must be a string");
  return std::string_view(o->via.str.ptr, o->via.str.size);
}

std::string_view MapView::str_or(std::string_view key, std::string_view dflt) const {
  const auto* o = get(key);
  if (is_nil(o) || o->type != msgpack::type::STR) return dflt;
  return std::string_view(o->via.str.ptr, o->via.str.size);
}

Result<std::int64_t> MapView::i64(std::string_view key) const {
  const auto* o = get(key);
  if (is_nil(o)) return field_error(key, "is missing");
  if (o->type == msgpack::type::POSITIVE_INTEGER) {
    if (o->via.u64 > static_cast<std::uint64_t>(INT64_MAX)) return field_error(key, "is too large");
    return static_cast<std::int64_t>(o->via.u64);
  }
  if (o->type == msgpack::type::NEGATIVE_INTEGER) return o->via.i64;
  return field_error(key, "must be an integer");
}

std::int64_t MapView::i64_or(std::string_view key, std::int64_t dflt) const {
  // Not via i64(): an absent optional field is the common case, and building its Error (two
  // strings and a map) only to drop it was a measurable part of the broker's cost per task.
  const auto* o = get(key);
  if (is_nil(o)) return dflt;
  if (o->type == msgpack::type::POSITIVE_INTEGER) {
    return o->via.u64 > static_cast<std::uint64_t>(INT64_MAX) ? dflt : static_cast<std::int64_t>(o->via.u64);
  }
  if (o->type == msgpack::type::NEGATIVE_INTEGER) return o->via.i64;
  return dflt;
}

double MapView::f64_or(std::string_view key, double dflt) const {
  const auto* o = get(key);
  if (is_nil(o)) return dflt;
  switch (o->type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return o->via.f64;
    case msgpack::type::POSITIVE_INTEGER: return static_cast<double>(o->via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return static_cast<double>(o->via.i64);
    default: return dflt;
  }
}

bool MapView::bool_or(std::string_view key, bool dflt) const {
  const auto* o = get(key);
  if (is_nil(o) || o->type != msgpack::type::BOOLEAN) return dflt;
  return o->via.boolean;
}

Result<std::vector<std::string>> MapView::str_list_or_empty(std::string_view key) const {
  std::vector<std::string> out;
  const auto* o = get(key);
  if (is_nil(o)) return out;
  if (o->type != msgpack::type::ARRAY) return field_error(key, "must be an array of strings");
  out.reserve(o->via.array.size);
  for (std::uint32_t i = 0; i < o->via.array.size; ++i) {
    const auto& e = o->via.array.ptr[i];
    if (e.type != msgpack::type::STR) return field_error(key, "must be an array of strings");
    out.emplace_back(e.via.str.ptr, e.via.str.size);
  }
  return out;
}

Result<std::map<std::string, std::string>> MapView::str_map_or_empty(std::string_view key) const {
  std::map<std::string, std::string> out;
  const auto* o = get(key);
  if (is_nil(o)) return out;
  if (o->type != msgpack::type::MAP) return field_error(key, "must be a map of strings");
  for (std::uint32_t i = 0; i < o->via.map.size; ++i) {
    const auto& kv = o->via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR || kv.val.type != msgpack::type::STR) {
      return field_error(key, "must be a map of strings");
    }
    out.emplace(std::string(kv.key.via.str.ptr, kv.key.via.str.size),
                std::string(kv.val.via.str.ptr, kv.val.via.str.size));
  }
  return out;
}

Result<std::optional<MapView>> MapView::map_or_none(std::string_view key) const {
  const auto* o = get(key);
  if (is_nil(o)) return std::optional<MapView>{};
  if (o->type != msgpack::type::MAP) return field_error(key, "must be a map");
  return std::optional<MapView>{MapView(o)};
}

Result<std::vector<const msgpack::object*>> MapView::array_or_empty(std::string_view key) const {
  std::vector<const msgpack::object*> out;
  const auto* o = get(key);
  if (is_nil(o)) return out;
  if (o->type != msgpack::type::ARRAY) return field_error(key, "must be an array");
  out.reserve(o->via.array.size);
  for (std::uint32_t i = 0; i < o->via.array.size; ++i) out.push_back(&o->via.array.ptr[i]);
  return out;
}

namespace {

// IEEE-754 bits big-endian after 0xca/0xcb. msgpack-c's pack_float/pack_double turn integral
// floats into ints and convert 2^64 to uint64_t (undefined behaviour, found by fuzzing), and
// would change a value's type on its way to the handler; floats stay floats here.
void put_float64(std::string& out, double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  out.push_back('\xcb');
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((bits >> shift) & 0xff));
}

void put_float32(std::string& out, float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  out.push_back('\xca');
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((bits >> shift) & 0xff));
}

// Re-encodes a decoded object. Recursion is bounded by the decode depth limit.
void repack(std::string& out, const msgpack::object& o) {
  StringStream s{&out};
  msgpack::packer<StringStream> pk(s);
  switch (o.type) {
    case msgpack::type::FLOAT32: put_float32(out, static_cast<float>(o.via.f64)); return;
    case msgpack::type::FLOAT64: put_float64(out, o.via.f64); return;
    case msgpack::type::ARRAY:
      pk.pack_array(o.via.array.size);
      for (std::uint32_t i = 0; i < o.via.array.size; ++i) repack(out, o.via.array.ptr[i]);
      return;
    case msgpack::type::MAP:
      pk.pack_map(o.via.map.size);
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        repack(out, o.via.map.ptr[i].key);
        repack(out, o.via.map.ptr[i].val);
      }
      return;
    default: pk.pack(o); return;  // scalars, strings, binaries, ext: no conversion involved
  }
}

}  // namespace

std::string MapView::raw(std::string_view key) const {
  const auto* o = get(key);
  if (o == nullptr) return {};
  std::string out;
  repack(out, *o);
  return out;
}

// ---- Body ----------------------------------------------------------------------------------

Result<Body> Body::decode(std::string_view bytes, const DecodeLimits& limits) {
  if (bytes.size() > limits.max_bytes) {
    return make_error(ErrorCode::kProtocolError,
                      "message body of " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                          std::to_string(limits.max_bytes));
  }
  Body body;
  try {
    std::size_t off = 0;
    body.handle_ = msgpack::unpack(bytes.data(), bytes.size(), off, nullptr, nullptr,
                                   msgpack::unpack_limit(limits.array, limits.map, limits.str,
                                                         limits.bin, limits.ext, limits.depth));
    if (off != bytes.size()) {
      return make_error(ErrorCode::kProtocolError, "trailing bytes after the message body");
    }
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kProtocolError, std::string("malformed msgpack body: ") + e.what());
  }
  if (body.handle_.get().type != msgpack::type::MAP) {
    return make_error(ErrorCode::kProtocolError, "message body must be a msgpack map");
  }
  return body;
}

// ---- Writer --------------------------------------------------------------------------------

void Writer::count_value() {
  if (!open_.empty() && !open_.back().is_map) ++open_.back().count;
}

Writer& Writer::begin_map() {
  count_value();
  open_.push_back({len_, 0, true});
  put("\xdf\0\0\0\0", 5);
  return *this;
}

Writer& Writer::begin_array() {
  count_value();
  open_.push_back({len_, 0, false});
  put("\xdd\0\0\0\0", 5);
  return *this;
}

Writer& Writer::end_map() {
  KB_CHECK(!open_.empty() && open_.back().is_map);
  put_be32(buf_, open_.back().header_at + 1, open_.back().count);
  open_.pop_back();
  return *this;
}

Writer& Writer::end_array() {
  KB_CHECK(!open_.empty() && !open_.back().is_map);
  put_be32(buf_, open_.back().header_at + 1, open_.back().count);
  open_.pop_back();
  return *this;
}

Writer& Writer::key(std::string_view k) {
  KB_CHECK(!open_.empty() && open_.back().is_map);
  ++open_.back().count;
  put_str(k);
  return *this;
}

Writer& Writer::str(std::string_view v) {
  count_value();
  put_str(v);
  return *this;
}

// The same encoding msgpack::packer::pack_str chooses (fixstr, str8, str16, str32), written
// without a packer. (One resize() and a memcpy was slower: resize zero-fills, out of line.)
void Writer::put_str(std::string_view v) {
  if (v.size() < 32) {  // keys and most values: one bounds check for the header and the bytes
    char* p = room(1 + v.size());
    p[0] = static_cast<char>(0xa0u | v.size());
    if (!v.empty()) std::memcpy(p + 1, v.data(), v.size());
    return;
  }
  put_sized(v, '\xd9');
}

// A str8/bin8 family header (tag8, then tag8 + 1 for 16 and tag8 + 2 for 32 bits, big-endian
// length) and the bytes.
void Writer::put_sized(std::string_view v, char tag8) {
  const auto n = static_cast<std::uint32_t>(v.size());
  char head[5];
  std::size_t h;
  if (n < 256) {
    head[0] = tag8;
    head[1] = static_cast<char>(n);
    h = 2;
  } else if (n < 65536) {
    head[0] = static_cast<char>(tag8 + 1);
    head[1] = static_cast<char>(n >> 8);
    head[2] = static_cast<char>(n);
    h = 3;
  } else {
    head[0] = static_cast<char>(tag8 + 2);
    for (int i = 0; i < 4; ++i) head[1 + i] = static_cast<char>(n >> (24 - 8 * i));
    h = 5;
  }
  put(head, h);
  put(v.data(), n);
}

Writer& Writer::i64(std::int64_t v) {
  count_value();
  // msgpack::packer::pack(int64_t)'s choice of the smallest form, written directly.
  char b[9];
  std::size_t n;
  auto be = [&](char tag, std::uint64_t x, int bytes) {
    b[0] = tag;
    for (int i = 0; i < bytes; ++i) b[1 + i] = static_cast<char>(x >> (8 * (bytes - 1 - i)));
    n = 1 + static_cast<std::size_t>(bytes);
  };
  const auto u = static_cast<std::uint64_t>(v);
  if (v < -32) {
    if (v < -(1LL << 15)) {
      if (v < -(1LL << 31)) be('\xd3', u, 8);
      else be('\xd2', u, 4);
    } else if (v < -(1 << 7)) {
      be('\xd1', u, 2);
    } else {
      be('\xd0', u, 1);
    }
  } else if (v < (1 << 7)) {
    b[0] = static_cast<char>(v);  // positive or negative fixint
    n = 1;
  } else if (v < (1LL << 8)) {
    be('\xcc', u, 1);
  } else if (v < (1LL << 16)) {
    be('\xcd', u, 2);
  } else if (v < (1LL << 32)) {
    be('\xce', u, 4);
  } else {
    be('\xcf', u, 8);
  }
  put(b, n);
  return *this;
}

Writer& Writer::f64(double v) {
  count_value();
  std::string bytes;
  put_float64(bytes, v);
  put(bytes.data(), bytes.size());
  return *this;
}

Writer& Writer::boolean(bool v) {
  count_value();
  *room(1) = v ? '\xc3' : '\xc2';
  return *this;
}

Writer& Writer::nil() {
  count_value();
  *room(1) = '\xc0';
  return *this;
}

Writer& Writer::bin(std::string_view bytes) {
  count_value();
  put_sized(bytes, '\xc4');  // msgpack::packer::pack_bin's forms: bin8, bin16, bin32
  return *this;
}

void Writer::grow(std::size_t n) {
  buf_.resize(std::max(buf_.size() * 2, len_ + n));
}

Writer& Writer::raw(std::string_view encoded) {
  if (encoded.empty()) return nil();
  count_value();
  put(encoded.data(), encoded.size());
  return *this;
}

Writer& Writer::kv_list(std::string_view k, const std::vector<std::string>& v) {
  key(k).begin_array();
  for (const auto& s : v) str(s);
  return end_array();
}

Writer& Writer::kv_map(std::string_view k, const std::map<std::string, std::string>& v) {
  key(k).begin_map();
  for (const auto& [mk, mv] : v) kv(mk, mv);
  return end_map();
}

std::string_view Writer::bytes() const {
  KB_CHECK(open_.empty());
  return {buf_.data(), len_};
}

std::string Writer::take() {
  KB_CHECK(open_.empty());
  buf_.resize(len_);  // truncates: the capacity stays, no copy
  len_ = 0;
  return std::move(buf_);
}

// ---- JSON bridge ---------------------------------------------------------------------------

std::string to_json(const msgpack::object& obj) {
  std::string packed;
  StringStream s{&packed};
  msgpack::pack(s, obj);
  auto json = msgpack_to_json(packed);
  return json ? *json : std::string("null");
}

Result<std::string> json_to_msgpack(std::string_view json) {
  // The broker decodes bodies to depth 32 and a task's input sits two levels down (body map,
  // then the input), so deeper input could never be submitted; refuse it here with a clear error.
  // (nlohmann's msgpack writer also recurses per level.)
  constexpr int kMaxDepth = 30;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : json) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) {
        return make_error(ErrorCode::kInvalidArgument, "input JSON nests deeper than 30 levels");
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    auto bytes = nlohmann::json::to_msgpack(nlohmann::json::parse(json));
    return std::string(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::parse_error& e) {
    return make_error(ErrorCode::kInvalidArgument,
                      "input is not valid JSON at byte " + std::to_string(e.byte) +
                          "; pass a JSON value such as '{\"name\":\"x\"}'",
                      {{"byte", std::to_string(e.byte)}});
  } catch (const nlohmann::json::exception& e) {  // e.g. 1e999: a number no double holds
    return make_error(ErrorCode::kInvalidArgument, std::string("input JSON cannot be encoded: ") + e.what());
  }
}

Result<std::string> msgpack_to_json(std::string_view msgpack_bytes) {
  // nlohmann's msgpack reader recurses per nesting level: check depth (and validity) with the
  // bounded unpacker first, so no input can exhaust the stack.
  try {
    std::size_t off = 0;
    const DecodeLimits l;
    (void)msgpack::unpack(msgpack_bytes.data(), msgpack_bytes.size(), off, nullptr, nullptr,
                          msgpack::unpack_limit(l.array, l.map, l.str, l.bin, l.ext, 64));
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kProtocolError, std::string("value is not valid msgpack: ") + e.what());
  }
  auto j = nlohmann::json::from_msgpack(msgpack_bytes.begin(), msgpack_bytes.end(),
                                        /*strict=*/true, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return make_error(ErrorCode::kProtocolError, "value is not valid msgpack or not representable as JSON");
  }
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kbfleet::protocol
