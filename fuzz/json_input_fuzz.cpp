// Fuzzes the CLI's --input path: protocol::json_to_msgpack on arbitrary text, then the way back
// (msgpack_to_json) and the way to the broker (a SubmitRequest body decoded with the broker's
// default limits). Invariants checked (a failure traps):
//  - JSON that json_to_msgpack accepts converts back to JSON, and parses to an equal value;
//  - input that json_to_msgpack accepts can be submitted: its SubmitRequest decodes within the
//    broker's DecodeLimits (json_to_msgpack refuses deep input for exactly this reason) and the
//    input the broker reads is the same JSON value (numbers compare by value). Inputs
//    over kMaxCheckedBytes are exempt: they could legitimately hold more than DecodeLimits::map
//    entries in one object.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/protocol/messages.hpp"
#include "common/protocol/wire.hpp"

namespace {

using namespace kbfleet::protocol;

// An object of more than 10000 (DecodeLimits::map) distinct keys needs more than 5 bytes each.
constexpr std::size_t kMaxCheckedBytes = 50000;

[[noreturn]] void invariant_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant broken: %s: %s\n", what, detail.c_str());
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto packed = json_to_msgpack(text);
  if (!packed) return 0;

  auto back = msgpack_to_json(*packed);
  if (!back) invariant_failed("msgpack_to_json", back.error().to_string());
  auto original = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto again = nlohmann::json::parse(*back, nullptr, /*allow_exceptions=*/false);
  if (original.is_discarded() || again.is_discarded() || original != again) {
    invariant_failed("json round trip", *back);
  }

  SubmitRequest request;
  request.plugin = "p";
  request.handler = "h";
  request.input = *packed;
  Writer w;
  w.begin_map().kv("req", 1);
  request.encode(w);
  w.end_map();
  auto body = Body::decode(w.take());
  if (!body) {
    if (size <= kMaxCheckedBytes) invariant_failed("submit body", body.error().to_string());
    return 0;
  }
  auto decoded = SubmitRequest::decode(body->view());
  if (!decoded) invariant_failed("SubmitRequest::decode", decoded.error().to_string());
  // Not byte-equal: msgpack-c re-packs integral floats as integers (1.0 -> 1, -0.0 -> 0).
  auto arrived = msgpack_to_json(decoded->input);
  if (!arrived || nlohmann::json::parse(*arrived, nullptr, /*allow_exceptions=*/false) != original) {
    invariant_failed("SubmitRequest", "input changed on the way to the broker");
  }
  return 0;
}
