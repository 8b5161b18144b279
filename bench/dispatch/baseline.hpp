#pragma once
// The baseline of the dispatch benchmark: a minimal ZeroMQ load-balancing broker in the zguide's
// "load balancing broker" pattern, with nothing kbfleet adds (no protocol decoding, queue,
// journal, events or bookkeeping), and its workers.
//   client DEALER -> [client, body] -> frontend ROUTER
//   backend ROUTER -> [worker, client, body] -> worker DEALER (echoes the body) -> backend ROUTER
//   -> [client, body] -> client.
// A worker announces `credits` slots by sending "R" that many times; the broker keeps a FIFO of
// worker ids with one entry per free credit and reads the frontend only while it is non-empty,
// so with 1 credit a worker has one request in flight and with N the requests pipeline.
#include <string>

namespace kbfleet::bench {

// Binds both ROUTERs on tcp://127.0.0.1:*, prints `frontend=EP` and `backend=EP` on stdout and
// routes until SIGTERM. Returns the process exit code.
int run_baseline_broker();
// Connects to `backend`, announces `credits` and echoes every request until SIGTERM.
int run_baseline_worker(const std::string& backend, int credits);

}  // namespace kbfleet::bench
