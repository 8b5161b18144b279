#pragma once
// One error model for kbfleet: a stable string code, a message saying what happened and what to
// do, and optional details (key -> value strings). Failures are values: functions that can fail
// return Result<T>. The codes are part of the protocol and are listed in docs/errors.md.
#include <map>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace kbfleet {

enum class ErrorCode {
  kPluginNotFound,
  kHandlerNotFound,
  kManifestInvalid,
  kPermissionDenied,
  kCapabilityMissing,
  kNoCapableWorker,  // a queued task waited --no-capable-worker-ms with no connected worker able to run it
  kSandboxUnavailable,
  kNotSupported,
  kTimeout,
  kQuotaExceeded,
  kOutputLimit,
  kCpuLimit,
  kMemoryLimit,  // the task cgroup saw an OOM kill (without cgroups RLIMIT_AS failures look like crashes)
  kPidsLimit,    // a fork failed at the task cgroup's pids.max and the handler failed
  kDiskLimit,    // the handler failed with its size-limited workspace full
  kHandlerFailed,
  kExecFailed,
  kQueueFull,
  kWorkerLost,
  kCancelled,
  kTaskNotFound,
  kArtifactNotFound,
  kArtifactUploadFailed,
  kHashMismatch,
  kInvalidArgument,
  kProtocolError,
  kUnsupportedVersion,
  kBrokerUnreachable,
  kIoError,
  kShuttingDown,  // the broker is stopping (SIGTERM) and accepts no new tasks; retry shortly
  kUnauthenticated,  // no identity: the key is not in the broker's allow-list (CURVE mode)
  kForbidden,        // an authenticated identity asked for something its role or tenant may not do
  kRateLimited,      // the tenant's submission rate is exhausted; details.retry_after_ms says when to retry
  kInternal,
};

// Stable wire name, e.g. "PLUGIN_NOT_FOUND".
std::string_view code_name(ErrorCode code);
// Inverse of code_name; unknown names map to kInternal.
ErrorCode code_from_name(std::string_view name);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::map<std::string, std::string> details;

  // "CODE: message"
  std::string to_string() const;
};

template <typename T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

inline tl::unexpected<Error> make_error(ErrorCode code, std::string message,
                                        std::map<std::string, std::string> details = {}) {
  return tl::unexpected<Error>(Error{code, std::move(message), std::move(details)});
}

// errno -> Error naming the call and its object: "open(/x/y): No such file or directory".
tl::unexpected<Error> errno_error(std::string_view call, std::string_view object, int err);

}  // namespace kbfleet

// Our own invariant broke: crash with a message. Never use on input from a peer or a user.
#define KB_CHECK(cond)                                                                 \
  do {                                                                                 \
    if (!(cond)) ::kbfleet::check_failed(#cond, __FILE__, __LINE__);                   \
  } while (0)

namespace kbfleet {
[[noreturn]] void check_failed(const char* expr, const char* file, int line);
}
