#pragma once
// The broker: one single-threaded zmq::poll loop (no locks) that accepts tasks from clients,
// queues them, dispatches them to workers with free slots, republishes their events on XPUB with
// a per-task replay backlog, stores their artifacts in the CAS and keeps their results for a
// retention time. Clients and workers share one ROUTER endpoint (docs/protocol.md).
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <zmq.hpp>

#include "broker/auth/allow_list.hpp"
#include "broker/auth/zap_handler.hpp"
#include "broker/broker_metrics.hpp"
#include "broker/cas/blob_writer.hpp"
#include "broker/cas/cas.hpp"
#include "broker/dispatcher/worker_registry.hpp"
#include "broker/journal/journal.hpp"
#include "broker/queue/task_queue.hpp"
#include "broker/tasks/task_store.hpp"
#include "common/errors/error.hpp"
#include "common/metrics/exposer.hpp"
#include "common/posix/fd.hpp"
#include "common/transport/frames.hpp"

namespace kbfleet::broker {

struct BrokerOptions {
  std::string bind = "tcp://127.0.0.1:7700";
  std::string events = "tcp://127.0.0.1:7701";
  std::string metrics = "127.0.0.1:9470";  // empty = no metrics endpoint
  std::string data_dir = "/var/lib/kbfleet";
  std::int64_t heartbeat_ms = 1000;
  std::int64_t liveness = 5;  // heartbeats a worker may miss before it is declared lost
  std::int64_t retention_ms = 3600 * 1000;
  // At most this many finished tasks are kept (memory and journal), the oldest forgotten first:
  // at sustained throughput the retention time alone would let both grow without bound.
  std::int64_t retention_max_tasks = 1000000;
  std::int64_t max_queued = 100000;
  std::int64_t backlog_bytes = 16 << 20;  // per task
  std::int64_t retry_backoff_ms = 500;    // first retry delay after a lost worker; doubles per attempt
  Durability durability = Durability::kBatch;
  // After a restart, how long running tasks wait for their worker to re-attach them before they
  // are retried or dead-lettered; 0 = 2 x liveness x heartbeat_ms, at least 5 s.
  std::int64_t reattach_grace_ms = 0;
  // How long a queued task may wait while no connected worker can run its plugin@version (none
  // offers it, or none grants its capabilities) before it fails NO_CAPABLE_WORKER; 0 = forever.
  std::int64_t no_capable_worker_ms = 60000;
  std::int64_t journal_max_pages = 0;  // > 0 caps journal.db (tests simulate a full disk); no flag
  // CURVE mode (docs/security.md): both set, or neither (plain mode, one implicit tenant
  // "default" whose peers may do everything, as before issue #7).
  std::string auth_file;     // --auth: the allow-list (broker/auth/allow_list.hpp)
  std::string curve_secret;  // --curve-secret: the broker's secret certificate (0600)
};

struct Endpoints {
  std::string bind;
  std::string events;
  std::string metrics;
};

class Broker {
 public:
  // Opens the CAS and the journal under data_dir, recovers the journalled tasks, binds the
  // endpoints and starts /metrics. IO_ERROR naming the endpoint, directory or journal that failed.
  [[nodiscard]] static Result<std::unique_ptr<Broker>> create(const BrokerOptions& options);
  ~Broker();

  const Endpoints& endpoints() const { return endpoints_; }
  // Runs until `stop_fd` (e.g. a signalfd) becomes readable; then refuses new submissions
  // (SHUTTING_DOWN), commits the journal, sends what it holds and returns. When `reload_fd`
  // (a SIGHUP signalfd, or -1) becomes readable, it is drained and the allow-list re-read.
  void run(int stop_fd, int reload_fd = -1);
  // Re-reads --auth. On an error the previous list stays in force and the error is returned.
  // Open connections stay open; their next message is judged by the new list.
  [[nodiscard]] Status reload_allow_list();
  bool secure() const { return allow_ != nullptr; }

  // Where a task's request, outcome and artifacts are encoded for the journal (kept across turns:
  // no allocation per record).
  struct JournalWriters {
    protocol::Writer request, outcome, artifacts;
  };

 private:
  struct Upload {
    std::string task_id;
    std::string worker;
    protocol::ArtifactMeta meta;
    BlobWriter::Handle blob;  // written and committed on writer_'s thread
    bool ending = false;      // upload_end arrived; its commit is queued
  };

  // A message held until the journal commit that makes its cause durable (group commit).
  struct Outgoing {
    bool publish = false;  // XPUB (topic = peer) rather than ROUTER
    std::string peer;
    std::string type;
    std::string body;
    std::vector<zmq::message_t> data;
    // publish: the encoded event, a reference to the buffer the task's backlog holds (not a copy).
    zmq::message_t event;
    // The task it is about (dispatch, event, acknowledgement): if the task's creation is rolled
    // back, its messages are dropped and its acknowledgement becomes an IO_ERROR.
    std::string task_id;
    bool ack = false;  // a submit/retry acknowledgement
    std::int64_t req = 0;
    // Bodies of later `task`/`result_ack` messages to the same peer in this turn, sent with this
    // one as a single batch (coalesce_outbox); `consumed` marks those folded into another.
    std::vector<std::string> batch;
    bool consumed = false;
    // On a `task` batch head: result acknowledgements that travel inside it (kAcksInTasks).
    std::vector<std::string> acks;
    bool due = false;  // held acknowledgements whose hold ended: sent now, not held again
  };
  // Result acknowledgements held for a worker that reads them inside `tasks` (kAcksInTasks),
  // until its next assignment or until `due` (kAckHoldMs), whichever comes first.
  struct HeldAcks {
    std::vector<std::string> bodies;
    Clock::time_point due;
  };

  Broker(BrokerOptions options, Cas cas);

  // security.cpp: CURVE + ZAP set-up, identities, per-tenant limits and counters
  [[nodiscard]] Status setup_security();
  // The caller of a message (caller_ set), or false after replying UNAUTHENTICATED/FORBIDDEN.
  bool authenticate(transport::Incoming& in);
  void deny(const std::string& peer, std::int64_t req, const Error& e, std::string_view reason);
  void on_secure_subscription(const zmq::message_t& msg);
  // FORBIDDEN/QUEUE_FULL/RATE_LIMITED for a submission of `plugin` by the caller's tenant.
  [[nodiscard]] Status admit_for_tenant(const std::string& plugin);
  bool tenant_may_start(const std::string& tenant) const;
  void count_queued(const Task& t, int delta);
  void count_running(const Task& t, int delta);

  // broker.cpp: loop, timers, events
  void on_router_message(transport::Incoming& in);
  void on_subscription(const zmq::message_t& msg);
  void ask_to_reconnect(const std::string& peer);
  Clock::time_point deadline_for_reconnect(Clock::time_point now) const;
  void on_timers();
  void reply(const std::string& peer, std::string_view type, std::string body,
             std::vector<zmq::message_t> data = {});
  void reply_error(const std::string& peer, std::int64_t req, const Error& e);
  void emit(Task& t, std::string_view type, std::string data_msgpack);
  void update_gauges();
  // Held in outbox_ until the end of the loop turn (commit_turn): with a journal, until the
  // commit that makes their cause durable; always, so a turn's messages to one worker batch.
  void send_or_hold(Outgoing&& out);
  void send_now(Outgoing& out);  // may consume out's body, data and event
  // Folds each peer's `task` and `result_ack` messages of this turn into one message each; for a
  // worker that reads acknowledgements inside `tasks`, folds them into its assignments or holds
  // them (hold_acks).
  void coalesce_outbox();
  void hold_acks();
  // Earliest end of a hold (the loop's poll wakes for it), or none.
  std::optional<Clock::time_point> next_ack_due() const;
  void shutdown();

  // recovery.cpp: the journal
  [[nodiscard]] Status recover();
  void restore_task(TaskRecord&& r, std::vector<Task*>& finished);
  // A new task is journalled at once; its reply waits for the commit (acknowledge_created).
  [[nodiscard]] Status journal_insert(Task& t);
  // Journals and queues a new task (submit, retry); nullopt after replying the journal's error.
  std::optional<std::string> admit(Task& t, const transport::Incoming& in);
  void acknowledge_created(const std::string& peer, std::int64_t req, const Task& t, std::string type, std::string body);
  void mark_dirty(Task& t);
  // What an Outgoing about `t` records as its task_id: the id while the task's creation could
  // still be rolled back this turn, else empty (no copy of the id per message).
  std::string rollback_id(const Task& t) const;
  // End of a loop turn: write dirty tasks, commit, then send what was held.
  void commit_turn();
  void on_journal_failure(const Error& e);
  void expire_orphans(Clock::time_point now);
  // Deletes the journal rows of finished tasks the store no longer keeps; `forgotten` = how many
  // it forgot this tick.
  void compact_journal(std::size_t forgotten);
  // Forgets finished tasks past --retention-ms or beyond --retention-max-tasks; returns how many.
  std::size_t expire_finished();

  // client_api.cpp
  void on_info(transport::Incoming& in);
  void on_submit(transport::Incoming& in);
  void on_status(transport::Incoming& in);
  void on_cancel(transport::Incoming& in);
  void on_events(transport::Incoming& in);
  void on_workers(transport::Incoming& in);
  void on_artifacts(transport::Incoming& in);
  void on_fetch(transport::Incoming& in);
  Result<Task*> task_for(const transport::Incoming& in);
  // SHUTTING_DOWN after SIGTERM, IO_ERROR while the journal cannot be written.
  [[nodiscard]] Status accepting() const;

  // dispatch.cpp: queue -> workers, results, lost workers
  void dispatch_key(const std::string& key);
  void dispatch_worker(WorkerInfo& w);
  void start_task(WorkerInfo& w, Task& t);
  void finish_task(Task& t, protocol::TaskOutcome outcome);
  void fail_task(Task& t, std::string_view state, const Error& e);
  void worker_lost(const std::string& routing_id, std::string_view why);
  // A running task whose worker is gone: retried after a backoff if its policy allows, else
  // dead-lettered (or cancelled, if a cancel was pending).
  void lose_task(Task& t, const std::string& worker_name, std::string_view why);
  void requeue_due_retries(Clock::time_point now);
  // Fails the queued tasks of keys no connected worker serves once they waited
  // --no-capable-worker-ms (NO_CAPABLE_WORKER). O(queue keys x workers) per sweep.
  void fail_tasks_without_capable_worker(Clock::time_point now);
  void on_retry(transport::Incoming& in);
  void on_drain(transport::Incoming& in);

  // worker_api.cpp
  void on_ready(transport::Incoming& in);
  void on_task_events(transport::Incoming& in);
  void on_result(transport::Incoming& in);
  void on_results(transport::Incoming& in);  // a worker's batch of results
  // One result (a `result` body or an element of `results`); queues its acknowledgement.
  void handle_result(const std::string& peer, const protocol::MapView& v);
  void on_upload_begin(transport::Incoming& in);
  void on_upload_chunk(transport::Incoming& in);
  void on_upload_end(transport::Incoming& in);
  void on_blob_writes();  // writer_ finished chunks or commits: acknowledge them
  void on_upload_committed(std::map<std::string, Upload>::iterator it, const Status& st);
  // Answers upload_done with the error and drops the upload (its temp file is removed).
  void refuse_upload(std::map<std::string, Upload>::iterator it, const Error& e);
  void record_artifact(Task& t, const protocol::ArtifactMeta& meta);  // stored + verified
  static std::string blob_owner_key(const std::string& tenant, const std::string& sha256);
  Result<Task*> running_task_of(const std::string& worker, std::string_view task_id, std::int64_t attempt);

  BrokerOptions options_;
  std::unique_ptr<AllowList> allow_;   // null in plain mode
  const AllowList* allow_view_ = nullptr;  // what the ZAP handler reads (borrowed by it)
  std::string curve_secret_key_;
  Identity plain_identity_{kDefaultTenant, Role::kAdmin, ""};
  const Identity* caller_ = nullptr;  // the identity of the message being handled
  struct TenantUsage {
    std::int64_t queued = 0;
    std::int64_t running = 0;
    double tokens = -1;  // submission token bucket; < 0 = not started (full)
    Clock::time_point refilled{};
  };
  std::unordered_map<std::string, TenantUsage> usage_;
  std::unordered_map<std::string, std::string> worker_keys_;  // routing id -> CURVE key it first used
  // CURVE mode: "tenant/sha256" of every blob a task of the tenant produced (dedupe scope).
  // Grows with distinct (tenant, blob) pairs, as the CAS itself does.
  std::unordered_set<std::string> tenant_blobs_;
  bool redispatch_ = false;  // a tenant dropped below its max_running: try idle workers at turn end
  Endpoints endpoints_;
  zmq::context_t ctx_;
  zmq::socket_t router_;
  zmq::socket_t xpub_;
  std::unique_ptr<ZapHandler> zap_;  // CURVE mode only; in ctx_, so declared after it
  Cas cas_;
  BrokerMetrics metrics_;
  metrics::Endpoint metrics_endpoint_;
  TaskQueue queue_;
  TaskStore tasks_;
  WorkerRegistry workers_;
  std::vector<WorkerInfo*> credit_candidates_;  // dispatch_key's buffer, kept for its capacity
  std::unique_ptr<BlobWriter> writer_;  // before uploads_: their handles abandon through it
  std::map<std::string, Upload> uploads_;
  std::int64_t queued_ = 0;   // tasks in state queued
  std::int64_t running_ = 0;  // tasks in state running
  std::int64_t plugin_subscribers_ = 0;  // XPUB subscriptions to "plugin." topics
  Clock::time_point next_heartbeat_;
  std::unique_ptr<Journal> journal_;  // null with --durability none
  JournalWriters journal_writers_;     // the record commit_turn() is writing (record_of), reused
  std::vector<Outgoing> outbox_;
  // coalesce_outbox's scratch: peer -> index of its batch head, for `task` [0] and `result_ack` [1]
  std::unordered_map<std::string_view, std::size_t> batch_heads_[2];
  std::unordered_map<std::string, HeldAcks> held_acks_;  // routing id -> its held acknowledgements
  std::vector<TaskKey> dirty_;  // tasks to rewrite in the journal at the end of this turn (Task::journal_dirty)
  bool turn_failed_ = false;             // a journal write failed during this turn
  std::optional<Error> journal_error_;   // set while the journal cannot be written
  bool journal_probing_ = false;         // the error was cleared on a timer tick to try again
  bool stopping_ = false;
  std::unordered_set<TaskKey, TaskKeyHash> created_this_turn_;
  std::unordered_map<std::string, Clock::time_point> reconnect_asked_;  // unknown workers asked to re-announce
  std::vector<std::string> orphans_;     // recovered running tasks waiting to be re-attached
  std::optional<Clock::time_point> reattach_deadline_;
  // Queue keys no connected worker serves, and since when (fail_tasks_without_capable_worker).
  std::unordered_map<std::string, Clock::time_point> no_capable_since_;
  Clock::time_point next_capable_sweep_;
  // Tasks waiting out a retry backoff: (due, task id), earliest first.
  std::priority_queue<std::pair<Clock::time_point, std::string>, std::vector<std::pair<Clock::time_point, std::string>>,
                      std::greater<>>
      retry_due_;
};

}  // namespace kbfleet::broker
