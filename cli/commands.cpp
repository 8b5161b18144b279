#include "cli/commands.hpp"

#include "common/security/cert.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <thread>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/exit_codes.hpp"
#include "cli/follow.hpp"
#include "common/hash/sha256.hpp"
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

int cmd_artifacts_get(Client& c, const std::string& id, const std::string& name, const std::string& out) {
  const bool to_stdout = out == "-";
  std::string tmp = to_stdout ? "" : out + ".part";
  int fd = to_stdout ? STDOUT_FILENO : ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Error{ErrorCode::kIoError, "cannot create " + tmp + ": " + std::strerror(errno), {}});
  hash::Sha256 h;
  std::int64_t offset = 0;
  std::string expected;
  bool eof = false;
  while (!eof) {
    auto r = c.call(msg::kFetch, [&](Writer& w) {
      w.kv("task_id", id).kv("name", name).kv("offset", offset).kv("length", std::int64_t{1} << 20);
    });
    if (!r) {
      if (!to_stdout) ::unlink(tmp.c_str());
      return fail(r.error());
    }
    auto v = r->body.view();
    expected = std::string(v.str_or("sha256", ""));
    eof = v.bool_or("eof", true);
    if (!r->data.empty()) {
      std::string_view bytes(static_cast<const char*>(r->data[0].data()), r->data[0].size());
      h.update(bytes);
      std::size_t done = 0;
      while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          if (!to_stdout) ::unlink(tmp.c_str());
          return fail(Error{ErrorCode::kIoError, "write " + out + ": " + std::strerror(errno), {}});
        }
        done += static_cast<std::size_t>(n);
      }
      offset += static_cast<std::int64_t>(bytes.size());
    } else if (!eof) {
      if (!to_stdout) {
        ::close(fd);
        ::unlink(tmp.c_str());
      }
      return fail(Error{ErrorCode::kProtocolError, "the broker sent an empty chunk before the end; retry", {}});
    }
  }
  auto got = h.hex_digest();
  if (got != expected) {
    if (!to_stdout) ::unlink(tmp.c_str());
    return fail(Error{ErrorCode::kHashMismatch, "downloaded " + name + " hashes to " + got + ", expected " + expected + "; retry", {}});
  }
  if (!to_stdout) {
    if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), out.c_str()) != 0) {
      return fail(Error{ErrorCode::kIoError, "cannot finish writing " + out + ": " + std::strerror(errno), {}});
    }
    std::cerr << name << ": " << offset << " bytes, sha256 " << got << " -> " << out << "\n";
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
