// Writer, MapView, bounded Body::decode and the JSON bridge (common/protocol/wire.hpp).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include <msgpack.hpp>

#include "common/protocol/wire.hpp"

namespace kbfleet::protocol {
namespace {

// A valid map body {"a": 1, "b": "xy"} written by hand (fixmap, fixstr keys).
const std::string kSmallMap("\x82\xa1" "a" "\x01\xa1" "b" "\xa2" "xy", 9);

std::string nested_arrays_in_map(int depth) {
  // {"k": [[[...]]]} with `depth` arrays under the top-level map.
  std::string out("\x81\xa1k", 3);
  for (int i = 0; i < depth; ++i) out.push_back('\x91');  // fixarray of one element
  out.push_back('\x00');
  return out;
}

void require_protocol_error(const Result<Body>& r, const std::string& text) {
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::kProtocolError);
  CHECK_THAT(r.error().message, Catch::Contains(text));
}

}  // namespace

TEST_CASE("the writer counts entries of nested maps and arrays", "[protocol][wire]") {
  Writer w;
  w.begin_map();
  w.kv("a", 1);
  w.key("list").begin_array().i64(1).str("x").begin_map().kv("c", true).end_map().begin_array().end_array().nil();
  w.end_array();
  w.key("m").begin_map().key("e").nil().key("f").begin_array().end_array().kv("g", -5).end_map();
  w.key("bin").bin(std::string("\x00\x01\x02", 3));
  w.kv("f", 2.5);
  w.key("raw").raw(kSmallMap);
  w.end_map();
  const std::string bytes = w.take();

  SECTION("msgpack-c reads the same structure") {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    const auto& root = h.get();
    REQUIRE(root.type == msgpack::type::MAP);
    CHECK(root.via.map.size == 6);
    const auto& list = root.via.map.ptr[1].val;
    REQUIRE(list.type == msgpack::type::ARRAY);
    CHECK(list.via.array.size == 5);
    CHECK(list.via.array.ptr[2].type == msgpack::type::MAP);
    CHECK(list.via.array.ptr[2].via.map.size == 1);
    CHECK(list.via.array.ptr[3].type == msgpack::type::ARRAY);
    CHECK(list.via.array.ptr[3].via.array.size == 0);
    CHECK(list.via.array.ptr[4].type == msgpack::type::NIL);
    const auto& m = root.via.map.ptr[2].val;
    REQUIRE(m.type == msgpack::type::MAP);
    CHECK(m.via.map.size == 3);
    CHECK(root.via.map.ptr[5].val.type == msgpack::type::MAP);
    CHECK(root.via.map.ptr[5].val.via.map.size == 2);
  }

  SECTION("Body::decode reads back what it wrote") {
    auto body = Body::decode(bytes);
    REQUIRE(body.has_value());
    auto v = body->view();
    CHECK(v.i64("a").value() == 1);
    auto list = v.array_or_empty("list");
    REQUIRE(list.has_value());
    REQUIRE(list->size() == 5);
    CHECK(MapView((*list)[2]).bool_or("c", false));
    auto m = v.map_or_none("m");
    REQUIRE(m.has_value());
    REQUIRE(m->has_value());
    CHECK((*m)->has("e"));
    CHECK((*m)->i64("g").value() == -5);
    CHECK((*m)->array_or_empty("f").value().empty());
    CHECK(v.f64_or("f", 0) == 2.5);
    auto raw = v.map_or_none("raw").value();
    REQUIRE(raw.has_value());
    CHECK(raw->str("b").value() == "xy");
    CHECK(v.raw("raw") == kSmallMap);
    const auto* bin = v.get("bin");
    REQUIRE(bin != nullptr);
    REQUIRE(bin->type == msgpack::type::BIN);
    CHECK(std::string(bin->via.bin.ptr, bin->via.bin.size) == std::string("\x00\x01\x02", 3));
  }
}

TEST_CASE("the writer encodes strings, integers and binaries byte for byte as msgpack::packer does", "[protocol][wire]") {
  // The wire format must not change (python peers, older builds): Writer writes headers itself,
  // so it must pick the same form as msgpack-c at every size boundary.
  struct Stream {
    std::string* out;
    void write(const char* p, std::size_t n) { out->append(p, n); }
  };
  for (std::size_t n : {0, 1, 31, 32, 255, 256, 65535, 65536, 70000}) {
    const std::string v(n, 'x');
    std::string expected;
    Stream s{&expected};
    msgpack::packer<Stream> pk(s);
    pk.pack_map(1);
    pk.pack_str(static_cast<std::uint32_t>(n)).pack_str_body(v.data(), static_cast<std::uint32_t>(n));
    pk.pack_str(static_cast<std::uint32_t>(n)).pack_str_body(v.data(), static_cast<std::uint32_t>(n));
    Writer w;
    w.begin_map().key(v).str(v).end_map();
    const std::string got = w.take();
    INFO("string of " << n << " bytes");
    // Writer's map header is always map32 (5 bytes); msgpack's fixmap is 1.
    CHECK(got.substr(5) == expected.substr(1));
  }
  for (std::int64_t v : std::initializer_list<std::int64_t>{
           0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL, INT64_MAX, -1, -32, -33, -128,
           -129, -32768, -32769, -2147483648LL, -2147483649LL, INT64_MIN}) {
    std::string expected;
    Stream s{&expected};
    msgpack::packer<Stream>(s).pack(v);
    Writer w;
    w.begin_array().i64(v).end_array();
    INFO("integer " << v);
    CHECK(w.take().substr(5) == expected);
  }
  for (std::size_t n : {0, 1, 255, 256, 65535, 65536, 70000}) {
    const std::string v(n, '\x01');
    std::string expected;
    Stream s{&expected};
    msgpack::packer<Stream>(s).pack_bin(static_cast<std::uint32_t>(n)).pack_bin_body(v.data(), static_cast<std::uint32_t>(n));
    Writer w;
    w.begin_array().bin(v).end_array();
    INFO("binary of " << n << " bytes");
    CHECK(w.take().substr(5) == expected);
  }
}

TEST_CASE("the writer's lists, string maps and empty raw values decode as written", "[protocol][wire]") {
  Writer w;
  w.begin_map()
      .kv_list("l", {"a", "b", ""})
      .kv_map("env", {{"K", "v"}, {"L", ""}})
      .key("none").raw("")
      .kv_list("empty", {})
      .end_map();
  auto body = Body::decode(w.take());
  REQUIRE(body.has_value());
  auto v = body->view();
  CHECK(v.str_list_or_empty("l").value() == std::vector<std::string>{"a", "b", ""});
  CHECK(v.str_map_or_empty("env").value() == std::map<std::string, std::string>{{"K", "v"}, {"L", ""}});
  REQUIRE(v.get("none") != nullptr);
  CHECK(v.get("none")->type == msgpack::type::NIL);
  CHECK(v.str_list_or_empty("empty").value().empty());
}

TEST_CASE("a map view names the field in every type error", "[protocol][wire]") {
  Writer w;
  w.begin_map()
      .kv("s", "text")
      .kv("n", 7)
      .kv("neg", -7)
      .key("big").raw(std::string("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9))  // uint64 max
      .key("nil").nil()
      .kv("b", true)
      .key("list").begin_array().str("ok").i64(1).end_array()
      .key("smap").begin_map().kv("k", 1).end_map()
      .end_map();
  auto body = Body::decode(w.take());
  REQUIRE(body.has_value());
  auto v = body->view();

  auto expect_field_error = [](const Error& e, const std::string& field, const std::string& what) {
    CHECK(e.code == ErrorCode::kProtocolError);
    CHECK(e.message == "field '" + field + "' " + what);
    CHECK(e.details.at("field") == field);
  };

  SECTION("strings") {
    CHECK(v.str("s").value() == "text");
    expect_field_error(v.str("absent").error(), "absent", "is missing");
    expect_field_error(v.str("nil").error(), "nil", "is missing");
    expect_field_error(v.str("n").error(), "n", "must be a string");
    CHECK(v.str_or("n", "dflt") == "dflt");
    CHECK(v.str_or("absent", "dflt") == "dflt");
  }
  SECTION("integers") {
    CHECK(v.i64("n").value() == 7);
    CHECK(v.i64("neg").value() == -7);
    expect_field_error(v.i64("s").error(), "s", "must be an integer");
    expect_field_error(v.i64("big").error(), "big", "is too large");
    expect_field_error(v.i64("absent").error(), "absent", "is missing");
    CHECK(v.i64_or("s", 3) == 3);
    CHECK(v.i64_or("absent", 3) == 3);
  }
  SECTION("floats and booleans take the default on another type") {
    CHECK(v.f64_or("n", 0) == 7.0);
    CHECK(v.f64_or("neg", 0) == -7.0);
    CHECK(v.f64_or("s", 1.5) == 1.5);
    CHECK(v.bool_or("b", false));
    CHECK(v.bool_or("n", false) == false);
  }
  SECTION("containers") {
    expect_field_error(v.str_list_or_empty("list").error(), "list", "must be an array of strings");
    expect_field_error(v.str_list_or_empty("s").error(), "s", "must be an array of strings");
    expect_field_error(v.str_map_or_empty("smap").error(), "smap", "must be a map of strings");
    expect_field_error(v.str_map_or_empty("list").error(), "list", "must be a map of strings");
    expect_field_error(v.map_or_none("s").error(), "s", "must be a map");
    expect_field_error(v.array_or_empty("smap").error(), "smap", "must be an array");
    CHECK_FALSE(v.map_or_none("absent").value().has_value());
    CHECK_FALSE(v.map_or_none("nil").value().has_value());
    CHECK(v.array_or_empty("absent").value().empty());
    CHECK(v.array_or_empty("list").value().size() == 2);
  }
  SECTION("raw re-encodes the value and is empty when absent") {
    CHECK(v.raw("absent").empty());
    CHECK(v.raw("nil") == std::string("\xc0", 1));
    CHECK(v.raw("n") == std::string("\x07", 1));
  }
}

TEST_CASE("decode accepts exactly one map and rejects truncated input and trailing bytes", "[protocol][wire]") {
  REQUIRE(Body::decode(kSmallMap).has_value());

  SECTION("every truncation of a valid body is a protocol error") {
    for (std::size_t n = 0; n < kSmallMap.size(); ++n) {
      INFO("truncated to " << n << " bytes");
      auto r = Body::decode(kSmallMap.substr(0, n));
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kProtocolError);
    }
  }
  SECTION("trailing bytes") {
    require_protocol_error(Body::decode(kSmallMap + '\x00'), "trailing bytes");
    require_protocol_error(Body::decode(kSmallMap + kSmallMap), "trailing bytes");
  }
  SECTION("a body that is not a map") {
    require_protocol_error(Body::decode(std::string("\x93\x01\x02\x03", 4)), "must be a msgpack map");
    require_protocol_error(Body::decode(std::string("\x2a", 1)), "must be a msgpack map");
    require_protocol_error(Body::decode(std::string("\xa2hi", 3)), "must be a msgpack map");
    require_protocol_error(Body::decode(std::string("\xc0", 1)), "must be a msgpack map");
  }
  SECTION("a byte that is never valid msgpack") {
    require_protocol_error(Body::decode(std::string("\xc1", 1)), "malformed msgpack body");
  }
}

TEST_CASE("decode refuses size bombs before allocating", "[protocol][wire]") {
  // Without limits msgpack-c would reserve the announced count (a 9-byte input asked for 128 GiB
  // when fuzzed, docs/dependencies.md); the error must come from the limit, not from bad_alloc.
  SECTION("a map32 header announcing 4 billion entries") {
    require_protocol_error(Body::decode(std::string("\xdf\xff\xff\xff\xff\xa1k\x01\x02", 9)),
                           "map size overflow");
  }
  SECTION("an array32 header announcing 4 billion elements, nested in a map") {
    require_protocol_error(Body::decode(std::string("\x81\xa1k\xdd\xff\xff\xff\xff", 8)), "array size overflow");
  }
  SECTION("an array32 header at the top level") {
    require_protocol_error(Body::decode(std::string("\xdd\xff\xff\xff\xff\x00\x00\x00\x00", 9)),
                           "array size overflow");
  }
  SECTION("str32 and bin32 headers announcing 4 GiB") {
    // msgpack-c waits for the whole string before checking its limit; the bytes never come.
    require_protocol_error(Body::decode(std::string("\x81\xa1k\xdb\xff\xff\xff\xff", 8)), "insufficient bytes");
    require_protocol_error(Body::decode(std::string("\x81\xa1k\xc6\xff\xff\xff\xff", 8)), "insufficient bytes");
  }
  SECTION("ext values are not part of the protocol") {
    require_protocol_error(Body::decode(std::string("\x81\xa1k\xd4\x01\x00", 6)), "ext size overflow");
  }
  SECTION("one entry over the map limit") {
    DecodeLimits limits;
    limits.map = 2;
    Writer w;
    w.begin_map().kv("a", 1).kv("b", 2).kv("c", 3).end_map();
    require_protocol_error(Body::decode(w.take(), limits), "map size overflow");
  }
}

TEST_CASE("decode refuses nesting deeper than the limit", "[protocol][wire]") {
  // docs/protocol.md: "nesting depth 32" counts the body map itself.
  CHECK(Body::decode(nested_arrays_in_map(31)).has_value());
  require_protocol_error(Body::decode(nested_arrays_in_map(32)), "depth size overflow");
  require_protocol_error(Body::decode(nested_arrays_in_map(5000)), "depth size overflow");
}

TEST_CASE("decode refuses an oversized body without unpacking it", "[protocol][wire]") {
  SECTION("over the default 8 MiB") {
    Writer w;
    w.begin_map().key("a").bin(std::string(3u << 20, 'x')).key("b").bin(std::string(3u << 20, 'y'));
    w.key("c").bin(std::string(3u << 20, 'z')).end_map();
    auto r = Body::decode(w.take());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kProtocolError);
    CHECK_THAT(r.error().message, Catch::Contains("exceeds the limit of 8388608"));
  }
  SECTION("over a configured limit, even when it is garbage") {
    DecodeLimits limits;
    limits.max_bytes = 4;
    require_protocol_error(Body::decode(std::string(5, '\xc1'), limits), "message body of 5 bytes exceeds");
    CHECK(Body::decode(std::string("\x81\xa1k\x01", 4), limits).has_value());
  }
  SECTION("a string or binary over 4 MiB") {
    Writer w;
    w.begin_map().kv("s", std::string((4u << 20) + 1, 's')).end_map();
    require_protocol_error(Body::decode(w.take()), "str size overflow");
    Writer b;
    b.begin_map().key("b").bin(std::string((4u << 20) + 1, 'b')).end_map();
    require_protocol_error(Body::decode(b.take()), "bin size overflow");
  }
}

TEST_CASE("the JSON bridge round-trips values and rejects bad input", "[protocol][wire]") {
  SECTION("JSON -> msgpack -> JSON") {
    const std::string json = R"({"a":[1,-2,2.5,true,null,"x"],"b":{"c":"d"}})";
    auto mp = json_to_msgpack(json);
    REQUIRE(mp.has_value());
    auto back = msgpack_to_json(*mp);
    REQUIRE(back.has_value());
    CHECK(*back == json);
  }
  SECTION("a Writer body converts to JSON") {
    Writer w;
    w.begin_map().kv("name", "python").kv("n", 3).kv_list("l", {"x"}).end_map();
    auto body = Body::decode(w.take());
    REQUIRE(body.has_value());
    CHECK(to_json(*body->view().object()) == R"({"l":["x"],"n":3,"name":"python"})");
  }
  SECTION("JSON scalars are values too") {
    CHECK(json_to_msgpack("42").value() == std::string("\x2a", 1));
    CHECK(msgpack_to_json(std::string("\xc0", 1)).value() == "null");
  }
  SECTION("bad JSON is INVALID_ARGUMENT") {
    for (const char* bad : {"", "{", "{\"a\":}", "[1,2", "nope", "{\"a\":1} trailing"}) {
      INFO("input: " << bad);
      auto r = json_to_msgpack(bad);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
      CHECK_THAT(r.error().message, Catch::Contains("not valid JSON"));
    }
  }
  SECTION("bad msgpack is PROTOCOL_ERROR") {
    for (const std::string& bad : {std::string(), std::string("\xc1", 1), std::string("\x92\x01", 2)}) {
      auto r = msgpack_to_json(bad);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kProtocolError);
    }
  }
}

TEST_CASE("a JSON syntax error names the position, as wire.hpp promises", "[protocol][wire]") {
  // wire.hpp: "INVALID_ARGUMENT naming the position on bad JSON". A user with a long --input
  // needs to know where it broke.
  auto r = json_to_msgpack(R"({"name": "x",, "n": 1})");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(r.error().message, Catch::Contains("14"));
}

}  // namespace kbfleet::protocol

// Found by fuzz/json_input_fuzz and fuzz/protocol_body_fuzz (reproducers in fuzz/crashes/).
TEST_CASE("fuzz findings: huge numbers, deep nesting and floats are handled", "[protocol][wire][fuzz]") {
  using namespace kbfleet;
  SECTION("a JSON number no double holds is INVALID_ARGUMENT, not a crash") {
    auto r = protocol::json_to_msgpack("1e999");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
  }
  SECTION("msgpack nested 20,000 levels is refused before conversion to JSON") {
    std::string deep(20000, '\x91');  // fixarray of one element, nested
    deep.push_back('\x01');
    auto r = protocol::msgpack_to_json(deep);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kProtocolError);
  }
  SECTION("integral and huge floats stay floats through Writer and MapView::raw") {
    protocol::Writer w;
    w.begin_map().kv("a", 1.0).kv("b", 18446744073709551616.0).end_map();
    auto body = protocol::Body::decode(w.take());
    REQUIRE(body);
    CHECK(body->view().get("a")->type == msgpack::type::FLOAT64);
    auto raw = body->view().raw("b");
    auto oh = msgpack::unpack(raw.data(), raw.size());
    CHECK(oh.get().type == msgpack::type::FLOAT64);
    CHECK(oh.get().via.f64 == 18446744073709551616.0);
  }
}
