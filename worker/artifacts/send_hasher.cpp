#include "worker/artifacts/send_hasher.hpp"

#include <unistd.h>

#include <cerrno>

namespace kbfleet::worker {
namespace {

// ZeroMQ calls this (on its I/O thread) once the message is sent: drops the message's reference.
void release(void*, void* hint) { delete static_cast<std::shared_ptr<char[]>*>(hint); }

}  // namespace

Result<std::unique_ptr<SendHasher>> SendHasher::start() {
  auto h = hash::BackgroundSha256::start();
  if (!h) return tl::unexpected(h.error());
  return std::unique_ptr<SendHasher>(new SendHasher(std::move(*h)));
}

SendHasher::~SendHasher() {
  if (!pending_.empty()) h_->wait_hashed(pending_.back().first);
}

Result<zmq::message_t> SendHasher::read_chunk(int fd, std::int64_t offset, std::size_t n) {
  std::shared_ptr<char[]> buf(new char[n > 0 ? n : 1]);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf.get() + got, n - got, offset + static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error("pread", "artifact", errno);
    if (r == 0) return make_error(ErrorCode::kIoError, "artifact changed or unreadable while uploading");
    got += static_cast<std::size_t>(r);
  }
  pending_.emplace_back(h_->update({buf.get(), n}), buf);
  while (!pending_.empty() && (pending_.size() > kMaxPending || h_->is_hashed(pending_.front().first))) {
    h_->wait_hashed(pending_.front().first);
    pending_.pop_front();
  }
  return zmq::message_t(buf.get(), n, &release, new std::shared_ptr<char[]>(buf));
}

std::string SendHasher::hex_digest() {
  std::string digest = h_->hex_digest();  // waits for every queued chunk
  pending_.clear();
  return digest;
}

}  // namespace kbfleet::worker
