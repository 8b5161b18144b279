#include "common/errors/error.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace kbfleet {
namespace {

constexpr std::array<std::pair<ErrorCode, std::string_view>, 34> kNames{{
    {ErrorCode::kPluginNotFound, "PLUGIN_NOT_FOUND"},
    {ErrorCode::kHandlerNotFound, "HANDLER_NOT_FOUND"},
    {ErrorCode::kManifestInvalid, "MANIFEST_INVALID"},
    {ErrorCode::kPermissionDenied, "PERMISSION_DENIED"},
    {ErrorCode::kCapabilityMissing, "CAPABILITY_MISSING"},
    {ErrorCode::kNoCapableWorker, "NO_CAPABLE_WORKER"},
    {ErrorCode::kSandboxUnavailable, "SANDBOX_UNAVAILABLE"},
    {ErrorCode::kNotSupported, "NOT_SUPPORTED"},
    {ErrorCode::kTimeout, "TIMEOUT"},
    {ErrorCode::kQuotaExceeded, "QUOTA_EXCEEDED"},
    {ErrorCode::kOutputLimit, "OUTPUT_LIMIT"},
    {ErrorCode::kCpuLimit, "CPU_LIMIT"},
    {ErrorCode::kMemoryLimit, "MEMORY_LIMIT"},
    {ErrorCode::kPidsLimit, "PIDS_LIMIT"},
    {ErrorCode::kDiskLimit, "DISK_LIMIT"},
    {ErrorCode::kHandlerFailed, "HANDLER_FAILED"},
    {ErrorCode::kExecFailed, "EXEC_FAILED"},
    {ErrorCode::kQueueFull, "QUEUE_FULL"},
    {ErrorCode::kWorkerLost, "WORKER_LOST"},
    {ErrorCode::kCancelled, "CANCELLED"},
    {ErrorCode::kTaskNotFound, "TASK_NOT_FOUND"},
    {ErrorCode::kArtifactNotFound, "ARTIFACT_NOT_FOUND"},
    {ErrorCode::kArtifactUploadFailed, "ARTIFACT_UPLOAD_FAILED"},
    {ErrorCode::kHashMismatch, "HASH_MISMATCH"},
    {ErrorCode::kInvalidArgument, "INVALID_ARGUMENT"},
    {ErrorCode::kProtocolError, "PROTOCOL_ERROR"},
    {ErrorCode::kUnsupportedVersion, "UNSUPPORTED_VERSION"},
    {ErrorCode::kBrokerUnreachable, "BROKER_UNREACHABLE"},
    {ErrorCode::kIoError, "IO_ERROR"},
    {ErrorCode::kShuttingDown, "SHUTTING_DOWN"},
    {ErrorCode::kUnauthenticated, "UNAUTHENTICATED"},
    {ErrorCode::kForbidden, "FORBIDDEN"},
    {ErrorCode::kRateLimited, "RATE_LIMITED"},
    {ErrorCode::kInternal, "INTERNAL"},
}};

}  // namespace

std::string_view code_name(ErrorCode code) {
  for (const auto& [c, name] : kNames) {
    if (c == code) return name;
  }
  return "INTERNAL";
}

ErrorCode code_from_name(std::string_view name) {
  for (const auto& [c, n] : kNames) {
    if (n == name) return c;
  }
  return ErrorCode::kInternal;
}

std::string Error::to_string() const {
  std::string out{code_name(code)};
  out += ": ";
  out += message;
  return out;
}

tl::unexpected<Error> errno_error(std::string_view call, std::string_view object, int err) {
  std::string msg{call};
  msg += "(";
  msg += object;
  msg += "): ";
  msg += std::strerror(err);
  return make_error(ErrorCode::kIoError, std::move(msg), {{"errno", std::to_string(err)}});
}

void check_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "kbfleet: internal invariant failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace kbfleet
