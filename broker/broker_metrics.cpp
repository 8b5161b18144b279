#include "broker/broker_metrics.hpp"

namespace kbfleet::broker {

using metrics::counter;
using metrics::duration_histogram;
using metrics::gauge;

BrokerMetrics::BrokerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      submitted(counter(*registry_, "kbfleet_broker_tasks_submitted_total", "Tasks accepted by the broker.")),
      queue_depth(gauge(*registry_, "kbfleet_broker_queue_depth", "Tasks waiting for a worker.")),
      running(gauge(*registry_, "kbfleet_broker_tasks_running", "Tasks dispatched and not finished.")),
      workers(gauge(*registry_, "kbfleet_broker_workers", "Connected workers.")),
      slots_total(gauge(*registry_, "kbfleet_broker_worker_slots", "Task slots announced by connected workers.")),
      slots_free(gauge(*registry_, "kbfleet_broker_worker_slots_free", "Task slots without a task.")),
      queue_wait(duration_histogram(*registry_, "kbfleet_broker_task_queue_wait_seconds", "Time from submission to dispatch.")),
      run_time(duration_histogram(*registry_, "kbfleet_broker_task_run_seconds", "Time from dispatch to result.")),
      events_published(counter(*registry_, "kbfleet_broker_events_published_total",
                               "Task events published on the event endpoint.")),
      artifact_bytes_in(counter(*registry_, "kbfleet_broker_artifact_received_bytes_total",
                                "Artifact bytes uploaded by workers and stored.")),
      artifact_bytes_out(counter(*registry_, "kbfleet_broker_artifact_served_bytes_total", "Artifact bytes served to clients.")),
      workers_lost(counter(*registry_, "kbfleet_broker_workers_lost_total",
                           "Workers lost: missed heartbeats, restarted, or shut down with tasks running.")),
      retries(counter(*registry_, "kbfleet_broker_task_retries_total", "Attempts re-queued after their worker was lost.")),
      draining(gauge(*registry_, "kbfleet_broker_draining", "1 while the broker shuts down (SIGTERM) and refuses new tasks.")),
      journal_commits(counter(*registry_, "kbfleet_broker_journal_commits_total",
                              "Journal transactions committed (one per loop turn that changed state: group commit).")),
      journal_records(counter(*registry_, "kbfleet_broker_journal_records_total",
                              "Task records written to the journal (records per commit = this / commits).")),
      journal_commit_time(duration_histogram(*registry_, "kbfleet_broker_journal_commit_seconds",
                                             "Time to commit one journal transaction.")),
      journal_errors(counter(*registry_, "kbfleet_broker_journal_errors_total",
                             "Failed journal writes or commits (submissions are refused with IO_ERROR meanwhile).")),
      journal_compacted(counter(*registry_, "kbfleet_broker_journal_compacted_total",
                                "Finished tasks deleted from the journal after their retention (time or count).")),
      recovered(*registry_, "kbfleet_broker_tasks_recovered_total",
                "Tasks recovered from the journal at start, by the state they were recovered in.", "state"),
      finished(*registry_, "kbfleet_broker_tasks_finished_total",
               "Tasks that reached a terminal state, by state and error code.", "state", "code"),
      rejected(*registry_, "kbfleet_broker_requests_rejected_total", "Requests answered with an error, by error code.", "code"),
      malformed(*registry_, "kbfleet_broker_messages_malformed_total",
                "Messages dropped or refused because they were malformed or stale, by reason.", "reason"),
      auth_denied(*registry_, "kbfleet_broker_auth_denied_total",
                  "CURVE mode: connections (unknown_key, role_domain, mechanism, malformed), requests (unknown_key, "
                  "role, worker_key, tenant, plugin, tenant_queued, rate) and subscriptions refused, by reason.",
                  "reason"),
      auth_reloads(counter(*registry_, "kbfleet_broker_auth_reloads_total", "Allow-list reloads (SIGHUP) that succeeded.")) {}

}  // namespace kbfleet::broker
