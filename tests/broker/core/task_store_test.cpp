// TaskStore: task ids, event numbering, bounded backlogs, retention and idempotency keys
// (broker/tasks/task_store.hpp).
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "broker/tasks/task_store.hpp"

namespace kbfleet::broker {
namespace {

protocol::SubmitRequest request(std::string plugin = "hello", std::string idempotency_key = "") {
  protocol::SubmitRequest r;
  r.plugin = std::move(plugin);
  r.handler = "greet";
  r.idempotency_key = std::move(idempotency_key);
  return r;
}

std::string output_data(int line) {
  protocol::Writer w;
  w.begin_map().kv("stream", "stdout").kv("line", line).kv("text", "line " + std::to_string(line)).end_map();
  return w.take();
}

protocol::Event decode_event(std::string_view body) {
  auto b = protocol::Body::decode(body);
  REQUIRE(b.has_value());
  auto e = protocol::Event::decode(b->view());
  REQUIRE(e.has_value());
  return *e;
}

protocol::Event decode_event(const zmq::message_t& body) { return decode_event(std::string_view(body.data<char>(), body.size())); }

}  // namespace

TEST_CASE("task ids are 32 lowercase hex characters and unique", "[broker][tasks]") {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    auto id = new_task_id();
    CHECK(id.size() == 32);
    CHECK(valid_task_id(id));
    seen.insert(id);
  }
  CHECK(seen.size() == 2000);
}

TEST_CASE("valid_task_id accepts only 32 lowercase hex characters", "[broker][tasks]") {
  CHECK(valid_task_id(std::string(32, '0')));
  CHECK(valid_task_id("0123456789abcdef0123456789abcdef"));
  CHECK_FALSE(valid_task_id(""));
  CHECK_FALSE(valid_task_id(std::string(31, 'a')));
  CHECK_FALSE(valid_task_id(std::string(33, 'a')));
  CHECK_FALSE(valid_task_id("0123456789ABCDEF0123456789abcdef"));
  CHECK_FALSE(valid_task_id("0123456789abcdeg0123456789abcdef"));
  CHECK_FALSE(valid_task_id("../../../../../../../etc/passwd.."));
}

TEST_CASE("a task id and its 128-bit key convert both ways", "[broker][tasks]") {
  for (int i = 0; i < 100; ++i) {
    const TaskKey key = new_task_key();
    const std::string id = to_hex(key);
    CHECK(valid_task_id(id));
    CHECK(parse_task_key(id) == key);
  }
  CHECK(to_hex(TaskKey{0x0123456789abcdefULL, 0xfedcba9876543210ULL}) == "0123456789abcdeffedcba9876543210");
  CHECK(parse_task_key("0123456789abcdeffedcba9876543210") == TaskKey{0x0123456789abcdefULL, 0xfedcba9876543210ULL});
  CHECK_FALSE(parse_task_key("0123456789ABCDEFfedcba9876543210"));
  CHECK_FALSE(parse_task_key("0123456789abcdeffedcba987654321"));
  CHECK(to_hex(TaskKey{0, ~0ULL}) == "0000000000000000ffffffffffffffff");
  // Every character that is not a lowercase hex digit is refused, in either half.
  for (int c = 0; c < 256; ++c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) continue;
    std::string id(32, 'a');
    id[c % 32] = static_cast<char>(c);
    INFO(c);
    CHECK_FALSE(parse_task_key(id));
  }
}

TEST_CASE("an unknown or malformed id finds nothing", "[broker][tasks]") {
  TaskStore store(1 << 20);
  Task& t = store.create(request(), 1000);
  CHECK(store.find(t.id().str()) == &t);
  CHECK(store.find(t.key) == &t);
  CHECK(store.find(new_task_id()) == nullptr);
  CHECK(store.find("") == nullptr);
  CHECK(store.find(t.id().str().substr(1)) == nullptr);
  CHECK(store.find("../../../../../../../etc/passwd..") == nullptr);
  store.erase("not an id");  // a no-op, not a crash
  CHECK(store.size() == 1);
}

TEST_CASE("a created task is queued, findable and counted by state", "[broker][tasks]") {
  TaskStore store(1 << 20);
  Task& t = store.create(request(), 1234);
  CHECK(valid_task_id(t.id().str()));
  CHECK(t.state == "queued");
  CHECK(t.submitted_ms == 1234);
  CHECK(t.request.plugin == "hello");
  CHECK(store.find(t.id().str()) == &t);
  CHECK(store.find("0123456789abcdef0123456789abcdef") == nullptr);
  CHECK(store.size() == 1);

  Task& u = store.create(request(), 1235);
  CHECK(u.id().str() != t.id().str());
  u.state = TaskState::of("running");
  CHECK(store.count_in_state("queued") == 1);
  CHECK(store.count_in_state("running") == 1);
  CHECK(store.count_in_state("succeeded") == 0);
}

TEST_CASE("a task state is one of the protocol's names", "[broker][tasks]") {
  CHECK(TaskState() == "queued");
  for (std::string_view name : {protocol::state::kQueued, protocol::state::kRunning, protocol::state::kSucceeded,
                                protocol::state::kFailed, protocol::state::kCancelled, protocol::state::kTimedOut,
                                protocol::state::kRetrying, protocol::state::kDeadLetter}) {
    auto s = TaskState::parse(name);
    REQUIRE(s.has_value());
    CHECK(s->name() == name);
    CHECK(s->terminal() == protocol::state::is_terminal(name));
  }
  CHECK_FALSE(TaskState::parse("Queued"));
  CHECK_FALSE(TaskState::parse(""));
  CHECK_FALSE(TaskState::parse("done"));
  CHECK(TaskState::of("running") != TaskState::of("queued"));
}

TEST_CASE("names shared by tasks are stored once and freed when no task uses them", "[broker][tasks]") {
  NameTable names;
  SharedName a = names.get("hello");
  SharedName b = names.get(std::string("hel") + "lo");
  CHECK(&a.str() == &b.str());  // one copy
  CHECK(a == "hello");
  CHECK(names.get("").empty());
  CHECK(names.get("") == "");
  CHECK(names.size() == 1);
  {
    // Many names nobody keeps: the table does not hold them forever.
    for (int i = 0; i < 1000; ++i) names.get("plugin-" + std::to_string(i));
    names.sweep();
    CHECK(names.size() == 1);  // only "hello", which a and b hold
  }
  CHECK(a == "hello");  // a name still held survives every sweep
  SharedName c = a;     // copies share it too
  a = SharedName();
  b = names.get("other");
  for (int i = 0; i < 1000; ++i) names.get("more-" + std::to_string(i));
  names.sweep();
  CHECK(c == "hello");
  CHECK(&names.get("hello").str() == &c.str());
}

TEST_CASE("a stored request keeps every field, the rare ones only when set", "[broker][tasks]") {
  protocol::SubmitRequest r = request("hello", "key-1");
  r.version = "1.2.0";
  r.input = "\x91\x01";
  r.env = {{"A", "1"}, {"B", "2"}};
  r.priority = -3;
  r.timeout_ms = 1500;
  r.max_attempts = 4;
  NameTable names;
  const StoredRequest stored(r, names);
  CHECK(stored.plugin == "hello");
  CHECK(stored.env() == r.env);
  CHECK(stored.idempotency_key() == "key-1");
  // The journal's wire form is the one SubmitRequest itself encodes.
  protocol::Writer a, b;
  a.begin_map();
  r.encode(a);
  a.end_map();
  b.begin_map();
  stored.ref().encode(b);
  b.end_map();
  CHECK(a.take() == b.take());
  const protocol::SubmitRequest back = stored.copy();
  CHECK(back.version == "1.2.0");
  CHECK(back.input == r.input);
  CHECK(back.env == r.env);
  CHECK(back.priority == -3);
  CHECK(back.timeout_ms == 1500);
  CHECK(back.idempotency_key == "key-1");
  CHECK(back.max_attempts == 4);

  const StoredRequest plain(request(), names);
  CHECK(plain.env().empty());
  CHECK(plain.idempotency_key().empty());
}

TEST_CASE("a queued task has no run record until it gets an event or finishes", "[broker][tasks]") {
  TaskStore store(1 << 20);
  Task& t = store.create(request(), 1);
  CHECK(t.run().next_seq == 1);  // the empty record: read without allocating one
  CHECK(t.run().worker.empty());
  const Task& other = store.create(request(), 2);
  CHECK(&t.run() == &other.run());  // both read the one shared empty record
  store.append_event(t, "started", output_data(0), 5);
  CHECK(&t.run() != &other.run());  // t has its own now
  CHECK(t.run().next_seq == 2);
  CHECK(other.run().next_seq == 1);
}

TEST_CASE("a published event shares the backlog's bytes and outlives their trimming", "[broker][tasks]") {
  TaskStore store(1);  // every new event trims the previous one
  Task& t = store.create(request(), 1);
  zmq::message_t frame;
  frame.copy(store.append_event(t, "started", output_data(1), 1));
  CHECK(frame.data<char>() == t.run().backlog.back().data());  // a reference, not a copy
  store.append_event(t, "done", output_data(2), 2);
  REQUIRE(t.run().backlog.size() == 1);
  CHECK(decode_event(t.run().backlog.front()).type == "done");
  CHECK(decode_event(frame).type == "started");  // still whole for the frame not yet sent
}

TEST_CASE("events are numbered from 1 and encoded as protocol events", "[broker][tasks]") {
  TaskStore store(1 << 20);
  Task& t = store.create(request(), 1);
  t.attempt = 1;
  auto first = decode_event(store.append_event(t, "started", output_data(0), 100));
  CHECK(first.seq == 1);
  CHECK(first.task_id == t.id().str());
  CHECK(first.type == "started");
  CHECK(first.ts_ms == 100);
  CHECK(first.plugin == "hello");
  CHECK(first.attempt == 1);
  // The event re-encodes data compactly; compare values, not header widths.
  CHECK(protocol::msgpack_to_json(first.data).value() == protocol::msgpack_to_json(output_data(0)).value());
  for (int i = 2; i <= 10; ++i) {
    CHECK(decode_event(store.append_event(t, "output", output_data(i), 100 + i)).seq == i);
  }
  CHECK(t.run().next_seq == 11);
  CHECK(t.run().first_seq == 1);
  REQUIRE(t.run().backlog.size() == 10);
  for (std::size_t i = 0; i < t.run().backlog.size(); ++i) CHECK(decode_event(t.run().backlog[i]).seq == std::int64_t(i) + 1);

  SECTION("numbering is per task") {
    Task& other = store.create(request(), 2);
    CHECK(decode_event(store.append_event(other, "started", output_data(0), 1)).seq == 1);
  }
}

TEST_CASE("backlog trimming keeps first_seq consistent with what is kept", "[broker][tasks]") {
  const std::size_t event_size = [] {
    TaskStore probe(1 << 20);
    Task& t = probe.create(request(), 1);
    return probe.append_event(t, "output", output_data(1), 1).size();
  }();
  // Room for three events of this size.
  TaskStore store(3 * event_size + event_size / 2);
  Task& t = store.create(request(), 1);
  for (int i = 1; i <= 20; ++i) {
    store.append_event(t, "output", output_data(i % 10), 1);
    INFO("after event " << i);
    CHECK(t.run().first_seq + std::int64_t(t.run().backlog.size()) == t.run().next_seq);
    CHECK(t.run().backlog.size() <= 3);
    std::size_t bytes = 0;
    for (const auto& b : t.run().backlog) bytes += b.size();
    CHECK(bytes == t.run().backlog_bytes);
    CHECK(decode_event(t.run().backlog.front()).seq == t.run().first_seq);
    CHECK(decode_event(t.run().backlog.back()).seq == i);
  }
  CHECK(t.run().first_seq == 18);

  SECTION("a single event larger than the limit is still kept") {
    TaskStore tiny(1);
    Task& u = tiny.create(request(), 1);
    tiny.append_event(u, "started", output_data(1), 1);
    tiny.append_event(u, "done", output_data(2), 1);
    CHECK(u.run().backlog.size() == 1);
    CHECK(u.run().first_seq == 2);
    CHECK(decode_event(u.run().backlog.front()).type == "done");
  }
}

TEST_CASE("finished tasks expire after the retention time, in finish order", "[broker][tasks]") {
  TaskStore store(1 << 20);
  Task& a = store.create(request("hello", "key-a"), 0);
  const std::string a_id = a.id().str();
  Task& b = store.create(request(), 0);
  const std::string b_id = b.id().str();
  Task& running = store.create(request(), 0);
  const std::string running_id = running.id().str();
  store.mark_finished(a, 1000);
  store.mark_finished(b, 2000);
  CHECK(a.run().finished_ms == 1000);

  CHECK(store.expire(1999, 1000) == 0);
  CHECK(store.find(a_id) != nullptr);
  CHECK(store.expire(2001, 1000) == 1);
  CHECK(store.find(a_id) == nullptr);
  CHECK(store.find_by_idempotency_key("key-a") == nullptr);
  CHECK(store.find(b_id) != nullptr);
  CHECK(store.expire(10000, 1000) == 1);
  CHECK(store.find(b_id) == nullptr);
  CHECK(store.find(running_id) != nullptr);  // never finished, never expires
  CHECK(store.expire(1000000, 1000) == 0);
  CHECK(store.size() == 1);
}

TEST_CASE("beyond the maximum count, the oldest finished tasks are forgotten first", "[broker][tasks]") {
  TaskStore store(1 << 20);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    Task& t = store.create(request("hello", "key-" + std::to_string(i)), 0);
    ids.push_back(t.id().str());
    store.mark_finished(t, 1000 + i);
  }
  const std::string queued_id = store.create(request(), 0).id().str();  // never finished: never forgotten
  CHECK(store.forgotten_through_ms(50000) == 999);

  CHECK(store.expire(2000, 3600000, 2) == 3);  // well inside the retention time
  CHECK(store.find(ids[0]) == nullptr);
  CHECK(store.find(ids[2]) == nullptr);
  CHECK(store.find_by_idempotency_key("key-2") == nullptr);
  CHECK(store.find(ids[3]) != nullptr);
  CHECK(store.find(ids[4]) != nullptr);
  CHECK(store.find(queued_id) != nullptr);
  CHECK(store.forgotten_through_ms(50000) == 1002);  // the journal may delete rows up to here

  CHECK(store.expire(2000, 3600000, 2) == 0);
  CHECK(store.expire(1000000, 1000, 2) == 2);  // then the retention time takes the rest
  CHECK(store.forgotten_through_ms(50000) == 50000);
  CHECK(store.size() == 1);
}

TEST_CASE("an idempotency key finds its task until the task expires", "[broker][tasks]") {
  TaskStore store(1 << 20);
  Task& t = store.create(request("hello", "job-7"), 0);
  store.create(request(), 0);
  CHECK(store.find_by_idempotency_key("job-7") == &t);
  CHECK(store.find_by_idempotency_key("job-8") == nullptr);
  CHECK(store.find_by_idempotency_key("") == nullptr);

  store.mark_finished(t, 10);
  CHECK(store.find_by_idempotency_key("job-7") == &t);  // kept while retained
  store.expire(10 + 60000 + 1, 60000);
  CHECK(store.find_by_idempotency_key("job-7") == nullptr);

  Task& again = store.create(request("hello", "job-7"), 70000);
  CHECK(store.find_by_idempotency_key("job-7") == &again);
}

}  // namespace kbfleet::broker
