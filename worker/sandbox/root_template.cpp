#include "worker/sandbox/root_template.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "common/posix/fd.hpp"

namespace kbfleet::worker {
namespace {

struct HelperError {
  std::int32_t index;
  std::int32_t err;
};

// The forked helper: a new mount namespace, the template built and entered, then a report on
// `report` ({-1, 0} for success) and a wait for the worker to take the namespace
// (EOF on `hold`). Syscalls only: the worker may have threads.
[[noreturn]] void run_helper(const MountPlan& plan, int report, int hold, int hold_write) noexcept {
  ::close(hold_write);  // the fork copied it; the worker's copy alone must hold the pipe open
  HelperError rec{-1, 0};
  if (::unshare(CLONE_NEWNS) < 0) {
    rec.err = errno;
  } else if (int failed = 0; plan.apply(-1, &failed) < 0) {
    rec = {failed, errno};
  }
  if (::write(report, &rec, sizeof rec) != sizeof rec) ::_exit(1);
  char c;
  while (::read(hold, &c, 1) < 0 && errno == EINTR) {
  }
  ::_exit(0);
}

void reap(pid_t pid) {
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

Result<std::shared_ptr<const RootTemplate>> RootTemplate::build(const TemplateSpec& spec) {
  auto plan = MountPlan::make_template(spec);
  if (!plan) return tl::unexpected(plan.error());
  auto tmpl = std::make_shared<RootTemplate>();
  std::vector<std::filesystem::path> hosts;
  for (const auto& e : plan->exposed()) hosts.push_back(e.host);
  auto identities = PathIdentities::take(hosts, PathIdentities::Clock::now());
  if (!identities) return tl::unexpected(identities.error());
  tmpl->identities_ = std::move(*identities);
  // Opened right after the identities were taken and before the helper binds the paths: if one
  // is replaced in between, current() sees it and the next task gets a new template.
  std::vector<FsRule> rules;
  for (const auto& e : plan->exposed()) rules.push_back(e.landlock_rule());
  auto opened = OpenedRules::open(rules);
  if (!opened) return tl::unexpected(opened.error());
  tmpl->landlock_ = std::move(*opened);
  auto report = posix::make_pipe();
  if (!report) return tl::unexpected(report.error());
  auto hold = posix::make_pipe();
  if (!hold) return tl::unexpected(hold.error());
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork", "root template helper", errno);
  if (pid == 0) run_helper(*plan, report->write.get(), hold->read.get(), hold->write.get());
  report->write.reset();
  hold->read.reset();

  HelperError rec{};
  ssize_t n;
  do {
    n = ::read(report->read.get(), &rec, sizeof rec);
  } while (n < 0 && errno == EINTR);
  Status st;
  if (n != sizeof rec) {
    st = make_error(ErrorCode::kSandboxUnavailable, "the root template helper exited before reporting", {{"step", "mntns"}});
  } else if (rec.index != -1 || rec.err != 0) {
    st = errno_error("building the sandbox root template", rec.index < 0 ? "unshare(CLONE_NEWNS)" : plan->describe(rec.index), rec.err);
    st.error().code = ErrorCode::kSandboxUnavailable;
    st.error().details["step"] = "mntns";
  } else {
    std::string ns = "/proc/" + std::to_string(pid) + "/ns/mnt";
    tmpl->ns_ = posix::Fd(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!tmpl->ns_) st = errno_error("open", ns, errno);
  }
  hold->write.reset();  // the helper exits; the namespace lives on through ns_
  reap(pid);
  if (!st) return tl::unexpected(st.error());
  tmpl->exposed_ = plan->exposed();
  return std::shared_ptr<const RootTemplate>(std::move(tmpl));
}

bool RootTemplate::current() const { return identities_->unchanged(PathIdentities::Clock::now()); }

Result<std::shared_ptr<const RootTemplate>> RootTemplates::get(const TemplateSpec& spec) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(spec.staging.lexically_normal().string(), spec.anchors);
  // A replaced template lives on for the tasks that hold it, and dies with the last of them.
  if (auto it = built_.find(key); it != built_.end() && it->second->current()) return it->second;
  auto built = RootTemplate::build(spec);
  if (!built) return tl::unexpected(built.error());
  built_.insert_or_assign(std::move(key), *built);
  return *built;
}

}  // namespace kbfleet::worker
