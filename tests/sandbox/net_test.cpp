// Attacks on the network. With `net: none` the task's network namespace has no usable interface
// (loopback down, no veth), and the task holds no CAP_NET_RAW. With a `net: {allow}` list (a
// worker started with --task-net) it reaches only what the list names.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "tests/sandbox/hostile_fleet.hpp"

using namespace kbfleet::test;
using namespace kbfleet::test::hostile;

TEST_CASE("a task with net: none cannot connect to a service on the host's loopback", "[sandbox][hostile][net]") {
  // Attack: connect to 127.0.0.1:<port>, where the test listens. Expected: ENETUNREACH, as the
  // task's network namespace has its own loopback, which is down (netns).
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  REQUIRE(listen(listener, 16) == 0);
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  HostileFleet h;
  auto f = h.run("connect-loopback", {{"port", std::to_string(ntohs(addr.sin_port))}});
  CHECK_CONTAINED(f, "(ENETUNREACH)", "(EPERM)", "(EACCES)");
  close(listener);
}

TEST_CASE("a task cannot open raw or packet sockets", "[sandbox][hostile][net]") {
  // Attack: socket(AF_PACKET, SOCK_RAW) and socket(AF_INET, SOCK_RAW), to sniff or forge traffic.
  // Expected: EPERM for both (no CAP_NET_RAW: unprivileged uid, capabilities dropped; seccomp may
  // refuse the families too).
  HostileFleet h;
  auto f = h.run("raw-socket");
  CHECK_CONTAINED(f, "(EPERM)", "(EAFNOSUPPORT)", "(EACCES)");
}

namespace {

struct Listener {
  int fd = -1;
  int port = 0;
  ~Listener() {
    if (fd >= 0) close(fd);
  }
};

// A TCP listener on `address`: loopback, or a host-side veth address of the worker's task network.
void listen_on(const std::string& address, Listener& l) {
  l.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(l.fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  REQUIRE(inet_pton(AF_INET, address.c_str(), &addr.sin_addr) == 1);
  socklen_t len = sizeof addr;
  REQUIRE(bind(l.fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  REQUIRE(listen(l.fd, 16) == 0);
  REQUIRE(getsockname(l.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  l.port = ntohs(addr.sin_port);
}

// The source address of a connection accepted within `deadline_ms`, or "".
std::string accept_from(int fd, int deadline_ms) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, deadline_ms) != 1) return "";
  sockaddr_in peer{};
  socklen_t len = sizeof peer;
  int c = accept4(fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
  if (c < 0) return "";
  close(c);
  char text[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
  return text;
}

}  // namespace

TEST_CASE("a task with a net allow-list reaches the allowed address and nothing else", "[sandbox][hostile][net]") {
  // Attack: connect to the host end of slot 0's veth, which the allow-list names
  // ("<address>/32"); then to the host end of slot 1's, which it does not; then to a service on
  // the host's loopback. Expected: the first connection arrives at the test's listener from the
  // task's eth0; the second fails at once with EHOSTUNREACH, refused by the nftables output chain
  // of the slot's network namespace (netallow), though the test listens there; the third reaches only the namespace's own loopback,
  // where nothing listens (ECONNREFUSED).
  if (geteuid() != 0) SKIP_TEST("per-slot task networks need a root worker");
  HostileFleet h({}, {}, {"--task-net", task_net()});
  Listener allowed, other, loopback;
  listen_on(task_net_host(0), allowed);
  listen_on(task_net_host(1), other);
  listen_on("127.0.0.1", loopback);

  auto ok = h.run("connect-to", {{"addr", task_net_host(0)}, {"port", std::to_string(allowed.port)}}, Plugin::kNet);
  INFO(ok.describe());
  CHECK(ok.state == "succeeded");
  CHECK(ok.output.find("PLANTED: connected: ") != std::string::npos);
  // From a task end (.2 or .6 of its slot's /30), not from one of the host's own addresses.
  const std::string peer = accept_from(allowed.fd, 10000);
  const std::string prefix = task_net_host(0).substr(0, task_net_host(0).rfind('.') + 1);
  CHECK((peer == prefix + "2" || peer == prefix + "6"));
  const auto layers = ok.status["outcome"].value("layers", nlohmann::json::array());
  CHECK(std::find(layers.begin(), layers.end(), "netallow") != layers.end());
  CHECK(std::find(layers.begin(), layers.end(), "netns") == layers.end());

  auto denied = h.run("connect-to", {{"addr", task_net_host(1)}, {"port", std::to_string(other.port)}}, Plugin::kNet);
  CHECK_CONTAINED(denied, "(EHOSTUNREACH)");
  CHECK(accept_from(other.fd, 0).empty());

  auto host_loopback = h.run("connect-to", {{"addr", "127.0.0.1"}, {"port", std::to_string(loopback.port)}}, Plugin::kNet);
  CHECK_CONTAINED(host_loopback, "(ECONNREFUSED)");
}

TEST_CASE("a plugin with a net allow-list never runs on a worker that cannot enforce it", "[sandbox][hostile][net]") {
  // Attack: run a plugin whose manifest allows an address, in a fleet whose only worker cannot
  // enforce allow-lists (no --task-net). Expected: the broker never dispatches it there (the
  // offer requires kbfleet.netallow, which only a --task-net worker grants); the task fails
  // NO_CAPABLE_WORKER naming --task-net, and the handler never runs with the host's network in
  // place of the allow-list.
  HostileFleet h({}, {}, {}, {"--no-capable-worker-ms", "500"});
  auto f = h.run("connect-to", {{"addr", task_net_host(0)}, {"port", "9"}}, Plugin::kNet);
  INFO(f.describe());
  CHECK(f.state == "failed");
  CHECK(f.error_code() == "NO_CAPABLE_WORKER");
  CHECK(f.status["outcome"]["error"].value("message", "").find("--task-net") != std::string::npos);
  CHECK(f.status.value("attempt", -1) == 0);  // never dispatched
  CHECK(f.output.find("PLANTED: ") == std::string::npos);
}

TEST_CASE("tasks with a net allow-list go only to the worker that enforces it", "[sandbox][hostile][net]") {
  // Two workers, only w1 started with --task-net. Expected: every allow-list task runs on w1
  // and reaches its allowed address; none lands on w0 (which would have to refuse it).
  if (geteuid() != 0) SKIP_TEST("per-slot task networks need a root worker");
  HostileFleet h;
  h.fleet.add_worker({"--task-net", task_net()});
  REQUIRE(h.fleet.wait_for_workers(2));
  Listener allowed;
  listen_on(task_net_host(0), allowed);
  for (int i = 0; i < 3; ++i) {
    auto f = h.run("connect-to", {{"addr", task_net_host(0)}, {"port", std::to_string(allowed.port)}}, Plugin::kNet);
    INFO(f.describe());
    CHECK(f.state == "succeeded");
    CHECK(f.status.value("worker", "") == "w1");
    CHECK(f.output.find("PLANTED: connected: ") != std::string::npos);
  }
}
