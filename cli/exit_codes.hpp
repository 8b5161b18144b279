#pragma once
// Exit codes of `kbfleet` (docs/cli.md). A handler's own status passes through unchanged, so
// platform failures use the codes shells and container runtimes already use for them.
#include "common/errors/error.hpp"

namespace kbfleet::cli {

inline constexpr int kExitUsage = 64;        // bad command line (sysexits EX_USAGE)
inline constexpr int kExitBadInput = 65;     // --input is not valid JSON (EX_DATAERR)
inline constexpr int kExitUnreachable = 69;  // no answer from the broker (EX_UNAVAILABLE)
inline constexpr int kExitIo = 74;           // cannot write the output file (EX_IOERR)
inline constexpr int kExitNoPerm = 77;       // UNAUTHENTICATED or FORBIDDEN (EX_NOPERM)
inline constexpr int kExitConfig = 78;       // a key file is unreadable, malformed or too open (EX_CONFIG)
inline constexpr int kExitTimeout = 124;     // the handler timed out (as timeout(1))
inline constexpr int kExitPlatform = 125;    // any other platform error (as docker run)
inline constexpr int kExitCannotExec = 126;  // the handler could not be executed
inline constexpr int kExitNotFound = 127;    // no such plugin or handler
inline constexpr int kExitCancelled = 130;   // cancelled (as Ctrl-C)
// 128 + N: the handler was killed by signal N.

int exit_code_for(ErrorCode code);

}  // namespace kbfleet::cli
