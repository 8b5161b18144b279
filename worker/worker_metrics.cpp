#include "worker/worker_metrics.hpp"

namespace kbfleet::worker {

using metrics::counter;
using metrics::gauge;

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      slots(gauge(*registry_, "kbfleet_worker_slots", "Task slots of this worker.")),
      busy(gauge(*registry_, "kbfleet_worker_slots_busy", "Slots running a task (including uploading its artifacts).")),
      connected(gauge(*registry_, "kbfleet_worker_broker_connected", "1 while the broker answers heartbeats.")),
      started(counter(*registry_, "kbfleet_worker_tasks_started_total", "Tasks received from the broker.")),
      run_time(metrics::duration_histogram(*registry_, "kbfleet_worker_task_run_seconds", "Handler wall time, spawn to exit.")),
      output_bytes(counter(*registry_, "kbfleet_worker_output_bytes_total", "Handler stdout/stderr bytes forwarded.")),
      events_sent(counter(*registry_, "kbfleet_worker_events_sent_total", "Output and progress events sent to the broker.")),
      artifact_bytes(counter(*registry_, "kbfleet_worker_artifact_uploaded_bytes_total", "Artifact bytes uploaded.")),
      reconnects(counter(*registry_, "kbfleet_worker_reconnects_total", "Times the worker re-announced itself to the broker.")),
      results_unread(counter(*registry_, "kbfleet_worker_results_unread_total",
                             "Results replaced by a minimal failure, or given up, because the broker answered but never acknowledged them.")),
      finished(*registry_, "kbfleet_worker_tasks_finished_total", "Tasks finished on this worker, by state and error code.",
               "state", "code") {}

}  // namespace kbfleet::worker
