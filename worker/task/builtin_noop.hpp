#pragma once
// The built-in `kbfleet.noop` plugin, offered only by a worker started with --builtin-noop (an
// operator opt-in; docs/operations.md). Its one handler, `noop`, completes inside the worker
// process at once: no workspace, no sandbox, no fork, no events but the broker's own. The result
// is the task's input, echoed. It exists so that a benchmark (bench/dispatch) measures what the
// broker and the protocol cost per task and nothing else.
#include <string_view>

#include "common/protocol/messages.hpp"

namespace kbfleet::worker {

inline constexpr std::string_view kNoopPlugin = "kbfleet.noop";
inline constexpr std::string_view kNoopHandler = "noop";
inline constexpr std::string_view kNoopVersion = "1.0.0";

// The offer a worker adds to its `ready`: plugin kNoopPlugin, handler kNoopHandler (idempotent,
// so a task lost with its worker is retried), no capabilities.
protocol::PluginOffer noop_offer();

// Runs a task of kNoopPlugin. Returns `succeeded` (exit 0, result = input, no layers), or
// `failed` with HANDLER_NOT_FOUND for any handler but kNoopHandler.
protocol::TaskOutcome run_noop(const protocol::TaskAssignment& task);

}  // namespace kbfleet::worker
