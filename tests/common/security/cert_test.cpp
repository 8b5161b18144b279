// Certificates (common/security/cert.hpp): written 0600/0644, loaded only when private, validated.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/security/cert.hpp"
#include "common/transport/curve.hpp"
#include "tests/support/process.hpp"

using namespace kbfleet;

namespace {

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("keygen writes a 0600 secret certificate and a 0644 public one that load back", "[security][cert]") {
  auto dir = test::make_temp_dir();
  auto keys = security::generate_keypair();
  REQUIRE(keys);
  CHECK(security::valid_z85_key(keys->public_key));
  REQUIRE(security::write_certificates(dir + "/alice", *keys));
  CHECK(mode_of(dir + "/alice.key") == 0600);
  CHECK(mode_of(dir + "/alice.pub") == 0644);
  auto loaded = security::load_secret_certificate(dir + "/alice.key");
  REQUIRE(loaded);
  CHECK(loaded->public_key == keys->public_key);
  CHECK(loaded->secret_key == keys->secret_key);
  auto pub = security::load_public_key(dir + "/alice.pub");
  REQUIRE(pub);
  CHECK(*pub == keys->public_key);
  CHECK(test::read_file(dir + "/alice.pub").find("secret-key") == std::string::npos);
  SECTION("an existing key is never overwritten") {
    auto again = security::write_certificates(dir + "/alice", *security::generate_keypair());
    REQUIRE_FALSE(again);
    CHECK(again.error().code == ErrorCode::kIoError);
    CHECK(security::load_secret_certificate(dir + "/alice.key")->secret_key == keys->secret_key);
  }
  test::remove_tree(dir);
}

TEST_CASE("a secret certificate readable by group or other is refused with chmod 600 in the message", "[security][cert]") {
  auto dir = test::make_temp_dir();
  REQUIRE(security::write_certificates(dir + "/k", *security::generate_keypair()));
  for (mode_t loose : {0640, 0604, 0660, 0700 | 0001}) {
    REQUIRE(::chmod((dir + "/k.key").c_str(), loose) == 0);
    auto r = security::load_secret_certificate(dir + "/k.key");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains("chmod 600 " + dir + "/k.key"));
  }
  test::remove_tree(dir);
}

TEST_CASE("malformed certificates are refused without echoing secrets", "[security][cert]") {
  auto dir = test::make_temp_dir();
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    ::chmod((dir + "/" + name).c_str(), 0600);
    return dir + "/" + name;
  };
  auto keys = *security::generate_keypair();
  auto other = *security::generate_keypair();
  SECTION("no secret key (a .pub passed as --key)") {
    auto r = security::load_secret_certificate(write("a.key", "curve\n    public-key = \"" + keys.public_key + "\"\n"));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("no secret-key"));
  }
  SECTION("a secret key that is not Z85") {
    auto r = security::load_secret_certificate(write("b.key", "curve\n    secret-key = \"short\"\n"));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("not a 40-character Z85 key"));
  }
  SECTION("a public key that does not belong to the secret key") {
    auto r = security::load_secret_certificate(write(
        "c.key", "curve\n    public-key = \"" + other.public_key + "\"\n    secret-key = \"" + keys.secret_key + "\"\n"));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("does not belong"));
    CHECK(r.error().message.find(keys.secret_key) == std::string::npos);
  }
  SECTION("a public certificate without a key") {
    auto r = security::load_public_key(write("d.pub", "metadata\ncurve\n"));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
  }
  SECTION("a missing file") {
    auto r = security::load_secret_certificate(dir + "/nope.key");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kIoError);
  }
  test::remove_tree(dir);
}

TEST_CASE("plain mode warns unless every endpoint is loopback", "[security][transport]") {
  for (const char* ep : {"tcp://127.0.0.1:7700", "tcp://127.0.0.1:*", "tcp://localhost:7700", "tcp://[::1]:7700",
                         "ipc:///run/kbfleet.sock", "inproc://x"}) {
    CHECK(transport::is_loopback_endpoint(ep));
  }
  for (const char* ep : {"tcp://0.0.0.0:7700", "tcp://*:7700", "tcp://10.0.0.5:7700", "tcp://eth0:7700",
                         "tcp://localhost.example.com:1", "tcp://[::]:7700"}) {
    CHECK_FALSE(transport::is_loopback_endpoint(ep));
  }
}

TEST_CASE("client keys need both files or neither", "[security][transport]") {
  auto none = transport::load_client_keys("", "");
  REQUIRE(none);
  CHECK_FALSE(none->enabled());
  auto half = transport::load_client_keys("a.key", "");
  REQUIRE_FALSE(half);
  CHECK_THAT(half.error().message, Catch::Contains("KBFLEET_BROKER_KEY"));
}
