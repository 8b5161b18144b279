#include "cli/commands.hpp"

#include "common/security/cert.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <deque>
#include <thread>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/exit_codes.hpp"
#include "cli/follow.hpp"
#include "common/hash/background_sha256.hpp"
#include "common/hash/sha256.hpp"
#include "common/posix/file_write.hpp"
#include "common/protocol/messages.hpp"

namespace kbfleet::cli {
namespace {

using protocol::Writer;
namespace msg = protocol::msg;

int fail(const Error& e) {
  std::cerr << "kbfleet: " << e.to_string() << "\n";
  return exit_code_for(e.code);
}

// --input: JSON text, or @path to read it from a file.
Result<std::string> input_msgpack(const std::string& input) {
  if (input.empty()) return std::string{};
  std::string json = input;
  if (input[0] == '@') {
    std::ifstream f(input.substr(1), std::ios::binary);
    if (!f) return make_error(ErrorCode::kInvalidArgument, "cannot read input file " + input.substr(1));
    std::stringstream ss;
    ss << f.rdbuf();
    json = ss.str();
  }
  return protocol::json_to_msgpack(json);
}

// Attempts of one submission when the broker does not answer or is shutting down. The same
// idempotency key is sent each time, so an acknowledgement lost on the way never makes two tasks.
constexpr int kSubmitAttempts = 3;

// "cli-" + 128 random bits in hex: the key of a submission the user gave no key for.
std::string random_idempotency_key() {
  unsigned char bytes[16] = {};
  std::size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    KB_CHECK(n > 0);
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string key = "cli-";
  for (unsigned char b : bytes) {
    key.push_back(kHex[b >> 4]);
    key.push_back(kHex[b & 0xf]);
  }
  return key;
}

Result<std::string> submit(Client& c, const SubmitArgs& a) {
  auto input = input_msgpack(a.input);
  if (!input) return tl::unexpected(input.error());
  protocol::SubmitRequest r;
  auto at = a.plugin.find('@');
  r.plugin = a.plugin.substr(0, at);
  if (at != std::string::npos) r.version = a.plugin.substr(at + 1);
  r.handler = a.handler;
  r.input = std::move(*input);
  r.env = a.env;
  r.priority = a.priority;
  r.timeout_ms = a.timeout_ms;
  r.idempotency_key = a.idempotency_key.empty() ? random_idempotency_key() : a.idempotency_key;
  r.max_attempts = a.max_attempts;
  for (int attempt = 1;; ++attempt) {
    auto reply = c.call(msg::kSubmit, [&](Writer& w) { r.encode(w); });
    if (reply) return std::string(reply->body.view().str_or("task_id", ""));
    const auto code = reply.error().code;
    const bool retriable = code == ErrorCode::kBrokerUnreachable || code == ErrorCode::kShuttingDown;
    if (!retriable || attempt >= kSubmitAttempts) return tl::unexpected(reply.error());
    std::cerr << "kbfleet: " << reply.error().to_string() << "; submitting again with the same idempotency key ("
              << attempt + 1 << "/" << kSubmitAttempts << ")\n";
    // A broker that is shutting down is usually restarted within moments.
    if (code == ErrorCode::kShuttingDown) std::this_thread::sleep_for(std::chrono::milliseconds(500 * attempt));
  }
}

std::string json_of(const msgpack::object* obj) { return obj ? protocol::to_json(*obj) : "null"; }

// The exit code a finished task maps to (see exit_codes.hpp), printing the platform error.
int exit_for_outcome(const protocol::MapView& o) {
  // A failed upload does not fail the task (the handler did its work), but say so.
  if (auto errs = o.str_list_or_empty("artifact_errors")) {
    for (const auto& e : *errs) std::cerr << "kbfleet: warning: artifact not stored: " << e << "\n";
  }
  std::string_view state = o.str_or("state", "");
  if (state == protocol::state::kSucceeded) return 0;
  auto err = o.map_or_none("error");
  std::string code = "INTERNAL", message;
  if (err && *err) {
    code = std::string((*err)->str_or("code", "INTERNAL"));
    message = std::string((*err)->str_or("message", ""));
  }
  if (code == "HANDLER_FAILED") {
    auto sig = o.i64_or("signal", 0);
    if (sig > 0) return 128 + static_cast<int>(sig);
    return static_cast<int>(o.i64_or("exit_code", 1));
  }
  std::cerr << "kbfleet: " << code << ": " << message << "\n";
  return exit_code_for(code_from_name(code));
}

void print_output(const protocol::Event& e) {
  auto body = protocol::Body::decode(e.data);
  if (!body) return;
  auto v = body->view();
  auto text = v.str_or("text", "");
  FILE* out = v.str_or("stream", "stdout") == "stderr" ? stderr : stdout;
  std::fwrite(text.data(), 1, text.size(), out);
  if (!v.bool_or("partial", false)) std::fputc('\n', out);
  std::fflush(out);
}

std::string event_json(const protocol::Event& e) {
  Writer w;
  w.begin_map();
  e.encode(w);
  w.end_map();
  auto json = protocol::msgpack_to_json(w.take());
  return json ? *json : "{}";
}

int follow_and_exit(Client& c, const std::string& id, Format f, int interrupt_fd, bool cancel_on_interrupt) {
  FollowHooks hooks;
  hooks.interrupt_fd = interrupt_fd;
  hooks.on_event = [&](const protocol::Event& e) {
    if (f == Format::kJson) {
      std::cout << event_json(e) << std::endl;
    } else if (e.type == protocol::event::kOutput) {
      print_output(e);
    } else if (e.type == protocol::event::kRetry) {
      std::cerr << "kbfleet: the worker was lost; the task runs again (output restarts)\n";
    }
  };
  if (cancel_on_interrupt) {
    hooks.on_interrupt = [&] {
      std::cerr << "kbfleet: cancelling task " << id << " (Ctrl-C again to stop waiting)\n";
      Writer w;
      w.begin_map().kv("req", std::int64_t{0}).kv("task_id", id).end_map();
      c.send_only(msg::kCancel, w.take());
    };
  }
  auto done = follow(c, id, hooks);
  if (!done) return fail(done.error());
  auto body = protocol::Body::decode(done->data);
  if (!body) return fail(body.error());
  return exit_for_outcome(body->view());
}

std::string human_bytes(std::int64_t n) {
  char buf[32];
  if (n < 10240) return std::to_string(n) + " B";
  if (n < (10 << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1 << 20));
  return buf;
}

}  // namespace

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBrokerUnreachable:
    case ErrorCode::kShuttingDown: return kExitUnreachable;
    case ErrorCode::kInvalidArgument: return kExitBadInput;
    case ErrorCode::kTimeout: return kExitTimeout;
    case ErrorCode::kPluginNotFound:
    case ErrorCode::kHandlerNotFound: return kExitNotFound;
    case ErrorCode::kExecFailed: return kExitCannotExec;
    case ErrorCode::kCancelled: return kExitCancelled;
    case ErrorCode::kIoError: return kExitIo;
    case ErrorCode::kUnauthenticated:
    case ErrorCode::kForbidden: return kExitNoPerm;
    default: return kExitPlatform;
  }
}

int cmd_run(Client& c, const SubmitArgs& a, int interrupt_fd) {
  auto id = submit(c, a);
  if (!id) return fail(id.error());
  return follow_and_exit(c, *id, Format::kText, interrupt_fd, /*cancel_on_interrupt=*/true);
}

int cmd_submit(Client& c, const SubmitArgs& a) {
  auto id = submit(c, a);
  if (!id) return fail(id.error());
  std::cout << *id << std::endl;
  return 0;
}

int cmd_status(Client& c, const std::string& id, Format f) {
  auto r = c.call(msg::kStatus, [&](Writer& w) { w.kv("task_id", id); });
  if (!r) return fail(r.error());
  const auto* task = r->body.view().get("task");
  if (f == Format::kJson) {
    std::cout << json_of(task) << std::endl;
    return 0;
  }
  protocol::MapView t(task);
  std::cout << "task      " << t.str_or("task_id", "") << "\n"
            << "plugin    " << t.str_or("plugin", "") << "@" << t.str_or("version", "") << " " << t.str_or("handler", "")
            << "\n"
            << "state     " << t.str_or("state", "") << "\n"
            << "attempt   " << t.i64_or("attempt", 0) << "\n"
            << "worker    " << t.str_or("worker", "") << "\n";
  auto o = t.map_or_none("outcome");
  if (o && *o) {
    const auto& ov = **o;
    std::cout << "exit      " << ov.i64_or("exit_code", -1) << (ov.i64_or("signal", 0) ? " signal " + std::to_string(ov.i64_or("signal", 0)) : "") << "\n"
              << "cpu       " << ov.i64_or("cpu_ms", 0) << " ms, wall " << ov.i64_or("wall_ms", 0) << " ms, max rss "
              << ov.i64_or("max_rss_kb", 0) << " KiB\n";
    auto err = ov.map_or_none("error");
    if (err && *err) std::cout << "error     " << (*err)->str_or("code", "") << ": " << (*err)->str_or("message", "") << "\n";
    if (ov.has("result")) std::cout << "result    " << json_of(ov.get("result")) << "\n";
    if (auto errs = ov.str_list_or_empty("artifact_errors")) {
      for (const auto& e : *errs) std::cout << "artifact  failed: " << e << "\n";
    }
    auto layers = ov.str_list_or_empty("layers");
    if (layers && !layers->empty()) {
      std::cout << "sandbox  ";
      for (const auto& l : *layers) std::cout << " " << l;
      std::cout << "\n";
    }
  }
  return 0;
}

int cmd_tail(Client& c, const std::string& id, Format f, int interrupt_fd) {
  return follow_and_exit(c, id, f, interrupt_fd, /*cancel_on_interrupt=*/false);
}

int cmd_cancel(Client& c, const std::string& id) {
  auto r = c.call(msg::kCancel, [&](Writer& w) { w.kv("task_id", id); });
  if (!r) return fail(r.error());
  std::cout << id << " " << r->body.view().str_or("state", "") << std::endl;
  return 0;
}

int cmd_retry(Client& c, const std::string& id) {
  auto r = c.call(msg::kRetry, [&](Writer& w) { w.kv("task_id", id); });
  if (!r) return fail(r.error());
  std::cout << r->body.view().str_or("task_id", "") << std::endl;
  return 0;
}

int cmd_artifacts_ls(Client& c, const std::string& id, Format f) {
  auto r = c.call(msg::kArtifacts, [&](Writer& w) { w.kv("task_id", id); });
  if (!r) return fail(r.error());
  const auto* arts = r->body.view().get("artifacts");
  if (f == Format::kJson) {
    std::cout << json_of(arts) << std::endl;
    return 0;
  }
  auto list = r->body.view().array_or_empty("artifacts");
  if (!list) return fail(list.error());
  for (const auto* a : *list) {
    auto meta = protocol::ArtifactMeta::decode(protocol::MapView(a));
    if (!meta) continue;
    std::cout << meta->name << "\t" << human_bytes(meta->size) << "\t" << meta->content_type << "\t" << meta->sha256
              << "\t" << meta->path << "\n";
  }
  return 0;
}

namespace {

// A fetch keeps kFetchWindow requests of kFetchChunkBytes in flight, so the broker reads the next
// chunks while this process hashes and writes one (a request per round trip left the link idle
// half of the time). The broker holds at most window x chunk = 8 MiB of replies for us.
constexpr std::int64_t kFetchChunkBytes = std::int64_t{2} << 20;
constexpr std::size_t kFetchWindow = 4;
constexpr std::int64_t kWritebackBytes = std::int64_t{8} << 20;

// Chunks written but maybe not hashed yet: each stays alive until the hashing thread is past it,
// also when fetch_into returns early. At most kFetchWindow + 1 are held (the newest is the one
// being written).
class HashingChunks {
 public:
  explicit HashingChunks(hash::BackgroundSha256& h) : h_(h) {}
  ~HashingChunks() {
    if (!held_.empty()) h_.wait_hashed(held_.back().first);
  }
  HashingChunks(const HashingChunks&) = delete;
  HashingChunks& operator=(const HashingChunks&) = delete;
  // Keeps the message until its bytes are hashed, queues them, and returns them (a message of
  // at most 33 bytes holds them inline, so only the held message's data() stays valid).
  std::string_view add(zmq::message_t chunk) {
    zmq::message_t& held = held_.emplace_back(0, std::move(chunk)).second;
    const std::string_view bytes(static_cast<const char*>(held.data()), held.size());
    held_.back().first = h_.update(bytes);
    while (held_.size() > kFetchWindow + 1) {
      h_.wait_hashed(held_.front().first);
      held_.pop_front();
    }
    return bytes;
  }

 private:
  hash::BackgroundSha256& h_;
  std::deque<std::pair<std::uint64_t, zmq::message_t>> held_;
};

// Streams the artifact into `fd` while `h` hashes it on its thread; returns the broker's sha256
// and the byte count in `got`. Every reply is checked against what was asked (offset, the size
// and hash of the first reply), so a reordered or inconsistent answer is a PROTOCOL_ERROR, never
// a silently wrong file.
Result<std::string> fetch_into(Client& c, const std::string& id, const std::string& name, int fd,
                               const std::string& out, FileSync sync, hash::BackgroundSha256& h, std::int64_t& got) {
  std::deque<std::pair<std::int64_t, std::int64_t>> in_flight;  // (req, offset)
  std::int64_t requested = 0;  // offset of the next request
  std::int64_t size = -1;      // from the first reply
  std::int64_t written_back = 0;  // bytes whose write-back was started
  std::string expected;
  HashingChunks hashing(h);
  auto ask = [&]() -> Status {
    auto req = c.start(msg::kFetch, [&](Writer& w) {
      w.kv("task_id", id).kv("name", name).kv("offset", requested).kv("length", kFetchChunkBytes);
    });
    if (!req) return tl::unexpected(req.error());
    in_flight.emplace_back(*req, requested);
    requested += kFetchChunkBytes;
    return {};
  };
  auto inconsistent = [](const std::string& what) {
    return make_error(ErrorCode::kProtocolError, "the broker's chunk " + what + "; retry");
  };
  if (auto st = ask(); !st) return tl::unexpected(st.error());  // alone: it tells the size
  got = 0;
  while (!in_flight.empty()) {
    auto [req, offset] = in_flight.front();
    in_flight.pop_front();
    auto r = c.finish(req);
    if (!r) return tl::unexpected(r.error());
    auto v = r->body.view();
    const std::int64_t chunk_size = v.i64_or("size", -1);
    const std::string_view sha = v.str_or("sha256", "");
    if (size < 0) {
      size = chunk_size;
      expected = std::string(sha);
      // Allocate the output's blocks at once: ext4's delayed allocation otherwise reserves and
      // maps them page by page under each write, which cost more than the copy itself. Only an
      // optimisation (a pipe or a file system without fallocate says no; write reports ENOSPC).
      if (size > 0) (void)::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size);
    } else if (chunk_size != size || sha != expected) {
      return inconsistent("names another size or hash than the first");
    }
    if (v.i64_or("offset", -1) != offset || offset != got) return inconsistent("is not at the offset asked for");
    zmq::message_t chunk;
    if (!r->data.empty()) chunk.move(r->data[0]);
    if (chunk.size() == 0 && got < size) return inconsistent("is empty before the end");
    if (static_cast<std::int64_t>(chunk.size()) > size - got) return inconsistent("goes past the artifact's size");
    // Ask for more before the slow part (hash, write), so the broker works meanwhile.
    while (requested < size && in_flight.size() < kFetchWindow) {
      if (auto st = ask(); !st) return tl::unexpected(st.error());
    }
    const std::string_view bytes = hashing.add(std::move(chunk));
    // while h hashes; in slices, so the page cache takes small folios (common/posix/file_write.hpp)
    if (auto st = posix::write_sliced(fd, bytes, out); !st) return tl::unexpected(st.error());
    got += static_cast<std::int64_t>(bytes.size());
    if (sync == FileSync::kFsync && got - written_back >= kWritebackBytes) {
      // Start the write-back now (it does not wait), so the fsync before the rename only waits
      // for the tail instead of writing the whole file (sync_file_range(2)). A pipe (-o -)
      // answers ESPIPE, which is fine.
      (void)::sync_file_range(fd, written_back, got - written_back, SYNC_FILE_RANGE_WRITE);
      written_back = got;
    }
  }
  if (got != size) return inconsistent("stream ended early");
  return expected;
}

}  // namespace

int cmd_artifacts_get(Client& c, const std::string& id, const std::string& name, const std::string& out,
                      FileSync sync) {
  const bool to_stdout = out == "-";
  std::string tmp = to_stdout ? "" : out + ".part";
  int fd = to_stdout ? STDOUT_FILENO : ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Error{ErrorCode::kIoError, "cannot create " + tmp + ": " + std::strerror(errno), {}});
  auto abandon = [&](const Error& e) {
    if (!to_stdout) {
      ::close(fd);
      ::unlink(tmp.c_str());
    }
    return fail(e);
  };
  auto h = hash::BackgroundSha256::start();
  if (!h) return abandon(h.error());
  std::int64_t bytes = 0;
  auto expected = fetch_into(c, id, name, fd, out, sync, **h, bytes);
  if (!expected) return abandon(expected.error());
  auto got = (*h)->hex_digest();
  if (got != *expected) {
    return abandon(Error{ErrorCode::kHashMismatch,
                         "downloaded " + name + " hashes to " + got + ", expected " + *expected + "; retry", {}});
  }
  if (!to_stdout) {
    // Like cp, curl and scp, the default leaves durability to the page cache: the rename still
    // makes FILE appear only complete and verified (to other processes, and after a crash of
    // this one); --fsync makes it survive a power loss too, at the disk's write speed.
    if ((sync == FileSync::kFsync && ::fsync(fd) != 0) || ::close(fd) != 0 || ::rename(tmp.c_str(), out.c_str()) != 0) {
      return fail(Error{ErrorCode::kIoError, "cannot finish writing " + out + ": " + std::strerror(errno), {}});
    }
    std::cerr << name << ": " << bytes << " bytes, sha256 " << got << " -> " << out << "\n";
  }
  return 0;
}

int cmd_workers(Client& c, Format f) {
  auto r = c.call(msg::kWorkers, [](Writer&) {});
  if (!r) return fail(r.error());
  if (f == Format::kJson) {
    std::cout << json_of(r->body.view().get("workers")) << std::endl;
    return 0;
  }
  auto list = r->body.view().array_or_empty("workers");
  if (!list) return fail(list.error());
  std::cout << "WORKER\tHOST\tSLOTS\tFREE\tPLUGINS\tLAYERS\n";
  for (const auto* obj : *list) {
    protocol::MapView w(obj);
    std::string plugins;
    if (auto ps = w.array_or_empty("plugins")) {
      for (const auto* p : *ps) {
        protocol::MapView pv(p);
        plugins += (plugins.empty() ? "" : ",") + std::string(pv.str_or("id", "")) + "@" + std::string(pv.str_or("version", ""));
        if (pv.has("error")) plugins += "(invalid)";
      }
    }
    std::string layers;
    if (auto ls = w.str_list_or_empty("layers")) {
      for (const auto& l : *ls) layers += (layers.empty() ? "" : ",") + l;
    }
    std::cout << w.str_or("worker_id", "") << "\t" << w.str_or("host", "") << "\t" << w.i64_or("slots", 0) << "\t"
              << w.i64_or("free", 0) << "\t" << plugins << "\t" << layers << "\n";
  }
  return 0;
}

int cmd_keygen(const std::string& base) {
  auto keys = security::generate_keypair();
  if (!keys) return fail(keys.error());
  if (auto st = security::write_certificates(base, *keys); !st) return fail(st.error());
  std::cout << "public-key=" << keys->public_key << "\nsecret=" << base << ".key\npublic=" << base << ".pub\n";
  return 0;
}

}  // namespace kbfleet::cli
