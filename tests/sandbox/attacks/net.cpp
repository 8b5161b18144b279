// Reaching the network with `net: none`: a TCP service on the host's loopback, and raw sockets
// (sniffing or forging packets needs CAP_NET_RAW).
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "tests/sandbox/attacks/attack.hpp"

namespace kbfleet::attack {

// Input: port (the test listens on 127.0.0.1:port).
void connect_loopback(const Input& in) {
  int port = std::atoi(in.get("port").c_str());
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) contained(errno_text("socket(AF_INET)"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string what = "connect(127.0.0.1:" + std::to_string(port) + ")";
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) escaped(what + " succeeded");
  if (errno != EINPROGRESS) contained(errno_text(what));
  pollfd p{fd, POLLOUT, 0};
  if (poll(&p, 1, 5000) == 0) contained(what + ": no answer within 5 s");
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err == 0) escaped(what + " succeeded");
  errno = err;
  contained(errno_text(what));
}

// Input: addr, port. For allow-list tests: PLANTED when the connection is made (the test judges
// whether that address was allowed, and sees the connection arrive), CONTAINED with the errno
// when it is refused.
void connect_to(const Input& in) {
  const std::string host = in.get("addr");
  int port = std::atoi(in.get("port").c_str());
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) contained(errno_text("socket(AF_INET)"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) contained("bad input address " + host);
  std::string what = "connect(" + host + ":" + std::to_string(port) + ")";
  timeval five{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &five, sizeof five);  // a dropped SYN must not hang the task
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) contained(errno_text(what));
  planted("connected: " + what);
}

void raw_socket(const Input&) {
  int packet = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (packet >= 0) escaped("opened socket(AF_PACKET, SOCK_RAW)");
  std::string packet_err = errno_text("socket(AF_PACKET, SOCK_RAW)");
  int raw = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (raw >= 0) escaped("opened socket(AF_INET, SOCK_RAW)");
  contained(packet_err + "; " + errno_text("socket(AF_INET, SOCK_RAW)"));
}

}  // namespace kbfleet::attack
