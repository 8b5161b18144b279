#include "bench/dispatch/baseline.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace kbfleet::bench {

namespace {

// SIGTERM as a pollable fd, so the loops below stop between messages.
int stop_fd() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  return ::signalfd(-1, &set, SFD_CLOEXEC);
}

std::string bind_any(zmq::socket_t& s) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, 0);
  s.set(zmq::sockopt::rcvhwm, 0);
  s.bind("tcp://127.0.0.1:*");
  return s.get(zmq::sockopt::last_endpoint);
}

}  // namespace

int run_baseline_broker() {
  const int stop = stop_fd();
  zmq::context_t ctx(1);
  zmq::socket_t frontend(ctx, zmq::socket_type::router);
  zmq::socket_t backend(ctx, zmq::socket_type::router);
  std::printf("frontend=%s\nbackend=%s\n", bind_any(frontend).c_str(), bind_any(backend).c_str());
  std::fflush(stdout);
  std::deque<zmq::message_t> free_credits;  // worker ids, one per free credit, oldest first
  std::vector<zmq::message_t> msg;
  for (;;) {
    zmq::pollitem_t items[] = {{backend.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, stop, ZMQ_POLLIN, 0},
                               {frontend.handle(), 0, ZMQ_POLLIN, 0}};
    // The frontend is read only while a worker has credit: requests wait in ZeroMQ's queues.
    zmq::poll(items, free_credits.empty() ? 2 : 3, std::chrono::milliseconds(-1));
    if (items[1].revents & ZMQ_POLLIN) return 0;
    if (items[0].revents & ZMQ_POLLIN) {
      // [worker, "R"] announces a credit; [worker, client, body] is a reply, which returns one.
      for (int n = 0; n < 1000; ++n) {
        msg.clear();
        if (!zmq::recv_multipart(backend, std::back_inserter(msg), zmq::recv_flags::dontwait)) break;
        if (msg.size() == 3) {
          frontend.send(msg[1], zmq::send_flags::sndmore);
          frontend.send(msg[2], zmq::send_flags::none);
        }
        free_credits.push_back(std::move(msg[0]));
      }
    }
    if (!free_credits.empty() && (items[2].revents & ZMQ_POLLIN)) {
      for (int n = 0; n < 1000 && !free_credits.empty(); ++n) {
        msg.clear();
        if (!zmq::recv_multipart(frontend, std::back_inserter(msg), zmq::recv_flags::dontwait)) break;
        if (msg.size() != 2) continue;
        backend.send(free_credits.front(), zmq::send_flags::sndmore);
        free_credits.pop_front();
        backend.send(msg[0], zmq::send_flags::sndmore);
        backend.send(msg[1], zmq::send_flags::none);
      }
    }
  }
}

int run_baseline_worker(const std::string& backend_ep, int credits) {
  const int stop = stop_fd();
  zmq::context_t ctx(1);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::sndhwm, 0);
  dealer.set(zmq::sockopt::rcvhwm, 0);
  dealer.connect(backend_ep);
  for (int i = 0; i < credits; ++i) dealer.send(zmq::str_buffer("R"), zmq::send_flags::none);
  std::vector<zmq::message_t> msg;
  for (;;) {
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, stop, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(-1));
    if (items[1].revents & ZMQ_POLLIN) return 0;
    for (int n = 0; n < 1000; ++n) {
      msg.clear();
      if (!zmq::recv_multipart(dealer, std::back_inserter(msg), zmq::recv_flags::dontwait)) break;
      zmq::send_multipart(dealer, msg);  // [client, body] back: the reply is the request echoed
    }
  }
}

}  // namespace kbfleet::bench
