// Attacks on the network with `net: none`: the task's network namespace has no usable interface
// (loopback down, no veth), and the task holds no CAP_NET_RAW.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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
