#include "common/permissions/env.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

namespace kbfleet::permissions {
namespace {

using Vars = std::map<std::string, std::string>;
using Lines = std::vector<std::string>;

const std::vector<std::string> kAllowed{"LANG", "CI_*"};
const Vars kWorker{{"KBFLEET_TASK_ID", "t-1"}, {"KBFLEET_OUT", "/ws/t-1/out"}, {"KBFLEET_WORKSPACE", "/ws/t-1"}};

EnvInputs inputs(const std::vector<std::string>& allowed, const Vars& submitted, const Vars& host) {
  return EnvInputs{&allowed, &submitted, &host, kWorker};
}

TEST_CASE("only host variables the manifest allows reach the handler", "[permissions][env]") {
  Vars host{{"LANG", "C.UTF-8"},   {"CI_JOB", "7"},         {"HOME", "/root"}, {"AWS_SECRET_ACCESS_KEY", "s"},
            {"PATH", "/opt/bin"}, {"LD_PRELOAD", "x.so"}, {"CI", "1"}};
  auto env = build_env(inputs(kAllowed, {}, host));
  REQUIRE(env.has_value());
  CHECK(*env == Lines{"CI_JOB=7", "HOME=/ws/t-1", "KBFLEET_OUT=/ws/t-1/out", "KBFLEET_TASK_ID=t-1",
                      "KBFLEET_WORKSPACE=/ws/t-1", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"});
}

TEST_CASE("a submitted variable the manifest does not allow is PERMISSION_DENIED naming it", "[permissions][env]") {
  auto env = build_env(inputs(kAllowed, {{"LANG", "C"}, {"LD_PRELOAD", "/tmp/x.so"}}, {}));
  REQUIRE_FALSE(env.has_value());
  CHECK(env.error().code == ErrorCode::kPermissionDenied);
  CHECK(env.error().message ==
        "environment variable LD_PRELOAD is not allowed by the plugin's permissions.env (allowed: LANG, CI_*)");
  CHECK(env.error().details.at("name") == "LD_PRELOAD");

  SECTION("with no env permissions at all") {
    std::vector<std::string> none;
    auto denied = build_env(inputs(none, {{"LANG", "C"}}, {}));
    REQUIRE_FALSE(denied.has_value());
    CHECK(denied.error().message ==
          "environment variable LANG is not allowed by the plugin's permissions.env (allowed: none)");
  }
}

TEST_CASE("KBFLEET_ variables belong to the worker alone", "[permissions][env]") {
  // Even a pattern that would match (the manifest parser rejects it) does not let them through.
  std::vector<std::string> reckless{"KBFLEET_*", "KBFLEET_OUT", "LANG"};
  SECTION("submitted ones are denied") {
    auto env = build_env(inputs(reckless, {{"KBFLEET_OUT", "/etc"}}, {}));
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().code == ErrorCode::kPermissionDenied);
    CHECK(env.error().message ==
          "environment variable KBFLEET_OUT is reserved: KBFLEET_* variables are set by the worker");
  }
  SECTION("host ones never pass and the worker's values win") {
    auto env = build_env(inputs(reckless, {}, {{"KBFLEET_OUT", "/etc"}, {"KBFLEET_SECRET", "s"}}));
    REQUIRE(env.has_value());
    CHECK(*env == Lines{"HOME=/ws/t-1", "KBFLEET_OUT=/ws/t-1/out", "KBFLEET_TASK_ID=t-1", "KBFLEET_WORKSPACE=/ws/t-1",
                        "PATH=/usr/local/bin:/usr/bin:/bin"});
  }
  CHECK_FALSE(env_name_allowed(reckless, "KBFLEET_OUT"));
}

TEST_CASE("malformed names and NUL bytes cannot smuggle variables", "[permissions][env]") {
  std::vector<std::string> allowed{"CI_*"};
  SECTION("a name with '='") {
    auto env = build_env(inputs(allowed, {{"CI_A=1\nLD_PRELOAD", "x"}}, {}));
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().code == ErrorCode::kInvalidArgument);
    CHECK(env.error().message == "environment variable name 'CI_A=1\nLD_PRELOAD' is invalid; use [A-Za-z_][A-Za-z0-9_]*");
  }
  SECTION("an empty name") {
    auto env = build_env(inputs(allowed, {{"", "x"}}, {}));
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().code == ErrorCode::kInvalidArgument);
  }
  SECTION("a value with NUL") {
    auto env = build_env(inputs(allowed, {{"CI_A", std::string("a\0b", 3)}}, {}));
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().code == ErrorCode::kInvalidArgument);
    CHECK(env.error().message == "environment variable CI_A contains a NUL byte");
  }
  SECTION("a host name with '=' is dropped") {
    auto env = build_env(inputs(allowed, {}, {{"CI_A=B", "x"}}));
    REQUIRE(env.has_value());
    CHECK(env->size() == 5);
  }
}

TEST_CASE("PATH is fixed unless the manifest allows PATH and a value is given", "[permissions][env]") {
  std::vector<std::string> with_path{"PATH"};
  SECTION("not allowed: host PATH is ignored") {
    auto env = build_env(inputs(kAllowed, {}, {{"PATH", "/evil"}}));
    REQUIRE(env.has_value());
    CHECK(env->back() == "PATH=/usr/local/bin:/usr/bin:/bin");
  }
  SECTION("allowed but not given") {
    auto env = build_env(inputs(with_path, {}, {}));
    REQUIRE(env.has_value());
    CHECK(env->back() == "PATH=/usr/local/bin:/usr/bin:/bin");
  }
  SECTION("allowed and given by the host") {
    auto env = build_env(inputs(with_path, {}, {{"PATH", "/opt/bin:/bin"}}));
    REQUIRE(env.has_value());
    CHECK(env->back() == "PATH=/opt/bin:/bin");
  }
  SECTION("allowed and submitted, which wins over the host") {
    auto env = build_env(inputs(with_path, {{"PATH", "/task/bin"}}, {{"PATH", "/opt/bin"}}));
    REQUIRE(env.has_value());
    CHECK(env->back() == "PATH=/task/bin");
  }
}

TEST_CASE("HOME is the task workspace", "[permissions][env]") {
  std::vector<std::string> with_home{"HOME"};
  SECTION("a host HOME is replaced even when allowed") {
    auto env = build_env(inputs(with_home, {}, {{"HOME", "/root"}}));
    REQUIRE(env.has_value());
    CHECK(env->front() == "HOME=/ws/t-1");
  }
  SECTION("a submitted HOME is denied rather than silently replaced") {
    auto env = build_env(inputs(with_home, {{"HOME", "/tmp"}}, {}));
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().code == ErrorCode::kPermissionDenied);
    CHECK(env.error().message == "environment variable HOME is set by the worker to the task workspace");
  }
  SECTION("without KBFLEET_WORKSPACE an allowed HOME passes") {
    Vars host{{"HOME", "/root"}};
    EnvInputs in{&with_home, nullptr, &host, {}};
    auto env = build_env(in);
    REQUIRE(env.has_value());
    CHECK(*env == Lines{"HOME=/root", "PATH=/usr/local/bin:/usr/bin:/bin"});
  }
}

TEST_CASE("the environment is sorted and the same inputs give the same output", "[permissions][env]") {
  Vars submitted{{"CI_Z", "z"}, {"CI_A", "submitted"}, {"LANG", "C"}};
  Vars host{{"CI_A", "host"}, {"CI_M", "m"}};
  auto first = build_env(inputs(kAllowed, submitted, host));
  auto second = build_env(inputs(kAllowed, submitted, host));
  REQUIRE(first.has_value());
  REQUIRE(second.has_value());
  CHECK(*first == *second);
  CHECK(*first == Lines{"CI_A=submitted", "CI_M=m", "CI_Z=z", "HOME=/ws/t-1", "KBFLEET_OUT=/ws/t-1/out",
                        "KBFLEET_TASK_ID=t-1", "KBFLEET_WORKSPACE=/ws/t-1", "LANG=C",
                        "PATH=/usr/local/bin:/usr/bin:/bin"});
}

TEST_CASE("missing inputs mean nothing is allowed or given", "[permissions][env]") {
  auto env = build_env(EnvInputs{});
  REQUIRE(env.has_value());
  CHECK(*env == Lines{"PATH=/usr/local/bin:/usr/bin:/bin"});

  Vars submitted{{"LANG", "C"}};
  EnvInputs no_patterns{nullptr, &submitted, nullptr, {}};
  auto denied = build_env(no_patterns);
  REQUIRE_FALSE(denied.has_value());
  CHECK(denied.error().code == ErrorCode::kPermissionDenied);
}

TEST_CASE("env_name_allowed matches exact names and PREFIX_* patterns only", "[permissions][env]") {
  std::vector<std::string> patterns{"LANG", "CI_*", "*", "X*", "BAD-_*"};
  CHECK(env_name_allowed(patterns, "LANG"));
  CHECK(env_name_allowed(patterns, "CI_"));
  CHECK(env_name_allowed(patterns, "CI_JOB_ID"));
  CHECK_FALSE(env_name_allowed(patterns, "CI"));
  CHECK_FALSE(env_name_allowed(patterns, "LANGUAGE"));
  CHECK_FALSE(env_name_allowed(patterns, "lang"));
  // Malformed patterns never widen what passes.
  CHECK_FALSE(env_name_allowed(patterns, "HOME"));
  CHECK_FALSE(env_name_allowed(patterns, "XDG_DIR"));
  CHECK_FALSE(env_name_allowed(patterns, "BAD-_X"));
  CHECK_FALSE(env_name_allowed(patterns, "CI_A=B"));
}

}  // namespace
}  // namespace kbfleet::permissions
