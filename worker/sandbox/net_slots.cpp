#include "worker/sandbox/net_slots.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <spdlog/spdlog.h>

extern char** environ;

namespace kbfleet::worker {
namespace {

constexpr const char* kNetnsDir = "/run/netns";

Error net_error(std::string message) {
  return Error{ErrorCode::kSandboxUnavailable, std::move(message), {{"layer", "netallow"}}};
}

const char* ip_binary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return nullptr;
}

// Runs `ip args...` to completion (set-up and tear-down only, never per task). Its stderr is the
// error message.
Status run_ip(const std::vector<std::string>& args) {
  const char* ip = ip_binary();
  if (ip == nullptr) return tl::unexpected(net_error("iproute2's `ip` is not installed (apt-get install iproute2)"));
  auto err = posix::make_pipe();
  if (!err) return tl::unexpected(net_error("pipe for `ip` failed"));
  std::vector<char*> argv{const_cast<char*>(ip)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, err->write.get(), STDERR_FILENO);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, ip, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  err->write.reset();
  std::string command = "ip";
  for (const auto& a : args) command += " " + a;
  if (rc != 0) return tl::unexpected(net_error(command + ": posix_spawn: " + std::strerror(rc)));
  std::string text;
  char buf[512];
  for (ssize_t n; (n = ::read(err->read.get(), buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return tl::unexpected(net_error(command + " failed: " + (text.empty() ? "exit status " + std::to_string(status) : text)));
}

std::string netns_name(pid_t pid, int slot) { return "kbfleet-" + std::to_string(pid) + "-" + std::to_string(slot); }
// At most 15 characters (IFNAMSIZ - 1): "kb" + a pid of up to 7 digits + "s" + the slot.
std::string veth_name(pid_t pid, int slot) { return "kb" + std::to_string(pid) + "s" + std::to_string(slot); }

// Deletes /run/netns/kbfleet-<pid>-<slot> of workers that are gone (killed with -9).
void remove_stale() {
  DIR* d = ::opendir(kNetnsDir);
  if (d == nullptr) return;
  std::vector<std::pair<std::string, std::string>> stale;  // namespace, its host-side veth
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.rfind("kbfleet-", 0) != 0) continue;
    pid_t pid = 0;
    auto digits = name.substr(8);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (ec != std::errc{} || pid <= 0 || end == digits.data() + digits.size() || *end != '-') continue;
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    int slot = -1;
    auto slot_text = std::string_view(end + 1, static_cast<std::size_t>(digits.data() + digits.size() - end - 1));
    std::from_chars(slot_text.data(), slot_text.data() + slot_text.size(), slot);
    stale.emplace_back(name, slot >= 0 ? veth_name(pid, slot) : "");
  }
  ::closedir(d);
  for (const auto& [name, veth] : stale) {
    spdlog::info("removing the task network namespace of a worker that is gone netns={}", name);
    if (auto st = run_ip({"netns", "del", name}); !st) spdlog::warn("{}", st.error().message);
    // The kernel dismantles a namespace (and the veth pair in it) asynchronously; wait, bounded,
    // so that its addresses are gone before this worker checks its range for overlaps.
    for (int i = 0; i < 200 && !veth.empty() && ::if_nametoindex(veth.c_str()) != 0; ++i) {
      timespec ts{0, 10'000'000};
      ::nanosleep(&ts, nullptr);
    }
  }
}

// Enters the namespace `fd` for the calling thread and returns there on destruction.
class InNamespace {
 public:
  explicit InNamespace(int fd) : self_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
    ok_ = self_ && ::setns(fd, CLONE_NEWNET) == 0;
  }
  ~InNamespace() {
    // Our invariant: nothing of the worker's own may be created in a task's namespace.
    if (ok_) KB_CHECK(::setns(self_.get(), CLONE_NEWNET) == 0);
  }
  bool ok() const { return ok_; }

 private:
  posix::Fd self_;
  bool ok_ = false;
};

// An address of this host inside `cidr` (a second worker given the same range, or a network the
// operator already uses there), as "10.231.0.1 on eth1"; "" if none.
std::string address_inside(const std::string& cidr) {
  auto slash = cidr.find('/');
  in_addr base{};
  if (slash == std::string::npos || ::inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &base) != 1) return "";
  const int prefix = std::stoi(cidr.substr(slash + 1));
  const std::uint32_t mask = ~std::uint32_t{0} << (32 - prefix);
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const auto* sin = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if ((ntohl(sin->sin_addr.s_addr) & mask) != (ntohl(base.s_addr) & mask)) continue;
    char text[INET_ADDRSTRLEN] = {0};
    ::inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    found = std::string(text) + " on " + i->ifa_name;
  }
  ::freeifaddrs(list);
  return found;
}

}  // namespace

Result<SlotAddresses> slot_addresses(const std::string& cidr, int slot, int slots) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "--task-net " + cidr + ": " + why + " (e.g. --task-net 10.231.0.0/16)");
  };
  auto slash = cidr.find('/');
  if (slash == std::string::npos) return bad("not a CIDR");
  in_addr base{};
  if (::inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &base) != 1) return bad("not an IPv4 address");
  int prefix = -1;
  auto len = std::string_view(cidr).substr(slash + 1);
  auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
  if (ec != std::errc{} || end != len.data() + len.size() || prefix < 8 || prefix > 30) return bad("the prefix must be 8-30");
  const std::uint64_t room = std::uint64_t{1} << (32 - prefix);
  if (slots < 1 || room < 4u * static_cast<std::uint64_t>(slots)) {
    return bad("too small for " + std::to_string(slots) + " slots (each needs a /30)");
  }
  if (slot < 0 || slot >= slots) return bad("no slot " + std::to_string(slot));
  std::uint32_t net = ntohl(base.s_addr) & (~std::uint32_t{0} << (32 - prefix));
  auto text = [](std::uint32_t a) {
    in_addr x{htonl(a)};
    char buf[INET_ADDRSTRLEN] = {0};
    ::inet_ntop(AF_INET, &x, buf, sizeof buf);
    return std::string(buf);
  };
  std::uint32_t sub = net + 4u * static_cast<std::uint32_t>(slot);
  return SlotAddresses{text(sub + 1), text(sub + 2)};
}

Result<std::shared_ptr<SlotNetworks>> SlotNetworks::create(const std::string& cidr, int slots) {
  if (auto probe = slot_addresses(cidr, 0, slots); !probe) return tl::unexpected(probe.error());
  if (::geteuid() != 0) return make_error(ErrorCode::kSandboxUnavailable, "--task-net needs a root worker", {{"layer", "netallow"}});
  remove_stale();
  if (auto taken = address_inside(cidr); !taken.empty()) {
    return tl::unexpected(net_error("the range overlaps this host's address " + taken +
                                    ": give each worker on a host a range of its own that the host does not use"));
  }
  std::shared_ptr<SlotNetworks> nets(new SlotNetworks(cidr, slots));
  const pid_t self = ::getpid();
  for (int slot = 0; slot < slots; ++slot) {
    const auto a = nets->addresses(slot);
    const std::string ns = netns_name(self, slot), veth = veth_name(self, slot);
    for (const auto& cmd : std::vector<std::vector<std::string>>{
             {"netns", "add", ns},
             {"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
             {"addr", "add", a.host + "/30", "dev", veth},
             {"link", "set", veth, "up"},
             {"-n", ns, "link", "set", "lo", "up"},
             {"-n", ns, "addr", "add", a.task + "/30", "dev", "eth0"},
             {"-n", ns, "link", "set", "eth0", "up"},
             {"-n", ns, "route", "add", "default", "via", a.host},
         }) {
      if (cmd[0] == "netns") nets->names_.push_back(ns);  // so the destructor removes it on a later failure
      if (auto st = run_ip(cmd); !st) return tl::unexpected(st.error());
    }
    const std::string path = std::string(kNetnsDir) + "/" + ns;
    posix::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return tl::unexpected(net_error("open " + path + ": " + std::strerror(errno)));
    nets->netns_[slot] = std::move(fd);
    // Nothing leaves until the first task's rules are loaded; this also proves nftables works.
    if (auto st = nets->prepare(slot, {}); !st) return tl::unexpected(st.error());
  }
  return nets;
}

SlotNetworks::~SlotNetworks() {
  netns_.clear();
  for (const auto& name : names_) {
    if (auto st = run_ip({"netns", "del", name}); !st) spdlog::warn("{}", st.error().message);
  }
}

SlotAddresses SlotNetworks::addresses(int slot) const { return *slot_addresses(cidr_, slot, slots_); }

Result<int> SlotNetworks::prepare(int slot, const std::vector<NetRule>& rules) {
  auto it = netns_.find(slot);
  if (it == netns_.end()) {
    return make_error(ErrorCode::kSandboxUnavailable, "slot " + std::to_string(slot) + " has no task network (--task-net)",
                      {{"layer", "netallow"}});
  }
  const std::string text = nft_ruleset(rules);
  std::string error;
  {
    InNamespace inside(it->second.get());
    if (!inside.ok()) return tl::unexpected(net_error(std::string("setns into the slot's network namespace: ") + std::strerror(errno)));
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx == nullptr) return tl::unexpected(net_error("nft_ctx_new failed"));
    nft_ctx_buffer_error(ctx);
    if (nft_run_cmd_from_buffer(ctx, text.c_str()) != 0) {
      const char* e = nft_ctx_get_error_buffer(ctx);
      error = e != nullptr && *e != '\0' ? e : "nftables refused the ruleset";
    }
    nft_ctx_free(ctx);
  }
  if (!error.empty()) {
    while (!error.empty() && error.back() == '\n') error.pop_back();
    return tl::unexpected(net_error("loading the task's network allow-list failed: " + error));
  }
  return it->second.get();
}

}  // namespace kbfleet::worker
