#include "worker/sandbox/identity.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace kbfleet::worker {
namespace {

Status write_file(const std::string& path, const std::string& text) {
  posix::Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno_error("open", path, errno);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return errno_error("write", path, errno);
  }
  return {};
}

// A namespace held by an fd: a short-lived child unshares it, we keep /proc/<child>/ns/<name>
// open after it exits. For a user namespace we write its maps first (a process cannot map ids it
// lacks in its own new namespace): 1000 inside to `host` outside.
Result<posix::Fd> make_namespace(int flag, uid_t host) {
  auto ready = posix::make_pipe();
  auto hold = posix::make_pipe();
  if (!ready || !hold) return make_error(ErrorCode::kIoError, "pipe for the slot user namespace failed");
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork", "slot user namespace", errno);
  if (pid == 0) {
    hold->write.reset();  // else our own copy keeps the read below from ever seeing EOF
    ready->read.reset();
    char c = ::unshare(flag) == 0 ? 'y' : 'n';
    (void)!::write(ready->write.get(), &c, 1);
    (void)!::read(hold->read.get(), &c, 1);  // until the parent has the namespace
    ::_exit(0);
  }
  ready->write.reset();
  hold->read.reset();
  char c = 'n';
  Result<posix::Fd> out = make_error(ErrorCode::kSandboxUnavailable, "the slot user namespace helper died");
  if (::read(ready->read.get(), &c, 1) == 1 && c != 'y') {
    out = make_error(ErrorCode::kSandboxUnavailable, "unshare() failed in the slot namespace helper");
  } else if (c == 'y') {
    std::string proc = "/proc/" + std::to_string(pid);
    const bool user = flag == CLONE_NEWUSER;
    std::string map = std::to_string(SlotIdentity::kInsideUid) + " " + std::to_string(host) + " 1\n";
    Status st;
    if (user) st = write_file(proc + "/uid_map", map);
    if (user && st) st = write_file(proc + "/gid_map", map);
    std::string ns_path = proc + (user ? "/ns/user" : "/ns/net");
    if (!st) {
      out = tl::unexpected(st.error());
    } else {
      posix::Fd ns(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
      out = ns ? Result<posix::Fd>(std::move(ns)) : errno_error("open", ns_path, errno);
    }
  }
  hold->write.reset();
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!out) out.error().code = ErrorCode::kSandboxUnavailable;
  return out;
}

}  // namespace

Result<std::shared_ptr<SlotIdentities>> SlotIdentities::create(std::uint32_t base, int precreate) {
  if (::geteuid() != 0) {
    return make_error(ErrorCode::kSandboxUnavailable,
                      "per-slot task users need a root worker (it maps unprivileged host uids into user namespaces)");
  }
  std::shared_ptr<SlotIdentities> ids(new SlotIdentities(base));
  for (int slot = 0; slot < precreate; ++slot) {
    if (auto got = ids->get(slot); !got) return tl::unexpected(got.error());
  }
  return ids;
}

Result<SlotIdentity> SlotIdentities::get(int slot) {
  auto host = static_cast<uid_t>(base_ + static_cast<std::uint32_t>(slot));
  auto it = userns_.find(slot);
  if (it == userns_.end()) {
    auto user = make_namespace(CLONE_NEWUSER, host);
    if (!user) return tl::unexpected(user.error());
    auto net = make_namespace(CLONE_NEWNET, host);
    if (!net) return tl::unexpected(net.error());
    netns_[slot] = std::move(*net);
    it = userns_.emplace(slot, std::move(*user)).first;
  }
  return SlotIdentity{host, static_cast<gid_t>(host), it->second.get(), netns_.at(slot).get()};
}

}  // namespace kbfleet::worker
