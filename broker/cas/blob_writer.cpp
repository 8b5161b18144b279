#include "broker/cas/blob_writer.hpp"

#include <sys/eventfd.h>

#include <cerrno>
#include <string_view>
#include <system_error>

namespace kbfleet::broker {

BlobWriter::Handle& BlobWriter::Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    release();
    writer_ = std::exchange(o.writer_, nullptr);
    id_ = o.id_;
  }
  return *this;
}

BlobWriter::Handle::~Handle() { release(); }

void BlobWriter::Handle::release() {
  if (writer_ == nullptr) return;
  {
    std::lock_guard lock(writer_->mu_);
    writer_->credit_.erase(id_);  // its results are dropped from now on
  }
  Job job;
  job.kind = Job::Kind::kAbandon;
  job.upload = id_;
  writer_->push(std::move(job));
  writer_ = nullptr;
}

Status BlobWriter::Handle::append(std::int64_t offset, zmq::message_t bytes) {
  {
    std::lock_guard lock(writer_->mu_);
    Credit& c = writer_->credit_.at(id_);
    if (c.committing) return make_error(ErrorCode::kInvalidArgument, "artifact chunk after upload_end");
    if (static_cast<std::int64_t>(bytes.size()) > c.limits.chunk_bytes) {
      return make_error(ErrorCode::kInvalidArgument, "artifact chunk of " + std::to_string(bytes.size()) +
                                                         " bytes is larger than chunk_bytes (" +
                                                         std::to_string(c.limits.chunk_bytes) + ")");
    }
    // The sender broke the window: refusing keeps what one upload can queue bounded.
    if (c.outstanding >= c.limits.window) {
      return make_error(ErrorCode::kQuotaExceeded, "more than window (" + std::to_string(c.limits.window) +
                                                       ") artifact chunks unacknowledged");
    }
    ++c.outstanding;
  }
  Job job;
  job.kind = Job::Kind::kAppend;
  job.upload = id_;
  job.offset = offset;
  job.bytes = std::move(bytes);
  writer_->push(std::move(job));
  return {};
}

void BlobWriter::Handle::commit(std::string declared) {
  {
    std::lock_guard lock(writer_->mu_);
    writer_->credit_.at(id_).committing = true;
  }
  Job job;
  job.kind = Job::Kind::kCommit;
  job.upload = id_;
  job.declared = std::move(declared);
  writer_->push(std::move(job));
}

Result<std::unique_ptr<BlobWriter>> BlobWriter::start() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return errno_error("eventfd", "blob writer", errno);
  std::unique_ptr<BlobWriter> w(new BlobWriter(posix::Fd(fd)));
  try {
    w->hash_thread_ = std::thread([raw = w.get()] { raw->hash_stage(); });
    w->write_thread_ = std::thread([raw = w.get()] { raw->write_stage(); });
  } catch (const std::system_error& e) {
    return make_error(ErrorCode::kIoError, std::string("cannot start the blob writer threads: ") + e.what());
  }
  return w;
}

BlobWriter::~BlobWriter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_hash_.notify_one();
  wake_write_.notify_one();
  if (hash_thread_.joinable()) hash_thread_.join();
  if (write_thread_.joinable()) write_thread_.join();
  jobs_.clear();
  writes_.clear();
  blobs_.clear();  // uncommitted uploads remove their temp files
}

BlobWriter::Handle BlobWriter::adopt(std::unique_ptr<Cas::Upload> blob, Limits limits) {
  std::uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    credit_[id] = Credit{limits};
  }
  Job job;
  job.kind = Job::Kind::kAdopt;
  job.upload = id;
  job.blob = std::move(blob);
  push(std::move(job));
  return Handle(this, id);
}

std::vector<BlobWriter::Done> BlobWriter::take() {
  // Drain the eventfd before taking the results: a result published after this read writes it
  // again, so it is never left unseen (finish() writes only when done_ was empty).
  std::uint64_t n;
  (void)::read(ready_.get(), &n, sizeof n);
  std::vector<Done> out;
  std::lock_guard lock(mu_);
  out.reserve(done_.size());
  for (Done& d : done_) {
    auto it = credit_.find(d.upload);
    if (it == credit_.end()) continue;  // abandoned meanwhile
    if (d.op == Op::kAppend) --it->second.outstanding;
    out.push_back(std::move(d));
  }
  done_.clear();
  return out;
}

void BlobWriter::push(Job job) {
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  }
  wake_hash_.notify_one();
}

BlobWriter::Blob BlobWriter::find(std::uint64_t upload) {
  std::lock_guard lock(mu_);
  auto it = blobs_.find(upload);
  return it == blobs_.end() ? nullptr : it->second;
}

void BlobWriter::hash_stage() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      wake_hash_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      if (job.kind == Job::Kind::kAdopt) {
        blobs_[job.upload] = Blob(std::move(job.blob));
        continue;
      }
    }
    if (job.kind == Job::Kind::kAppend) {
      if (Blob blob = find(job.upload)) {
        job.hashed = blob->hash(job.offset, std::string_view(static_cast<const char*>(job.bytes.data()), job.bytes.size()));
      }  // else the writing stage answers that the upload ended
    }
    {
      std::lock_guard lock(mu_);
      writes_.push_back(std::move(job));
    }
    wake_write_.notify_one();
  }
}

void BlobWriter::write_stage() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      wake_write_.wait(lock, [&] { return stop_ || !writes_.empty(); });
      if (stop_) return;
      job = std::move(writes_.front());
      writes_.pop_front();
    }
    if (job.kind == Job::Kind::kAbandon) {
      Blob gone;  // removes the temp file outside the lock, unless the other stage still holds it
      std::lock_guard lock(mu_);
      if (auto it = blobs_.find(job.upload); it != blobs_.end()) {
        gone = std::move(it->second);
        blobs_.erase(it);
      }
    } else {
      finish(execute(job));
    }
    // job.bytes is released here, on this thread: the chunk's memory goes as soon as it is written.
  }
}

BlobWriter::Done BlobWriter::execute(Job& job) {
  Done d;
  d.upload = job.upload;
  d.op = job.kind == Job::Kind::kCommit ? Op::kCommit : Op::kAppend;
  Blob blob = find(job.upload);
  if (blob == nullptr) {
    d.status = make_error(ErrorCode::kInvalidArgument, "artifact upload already committed or abandoned");
    return d;
  }
  if (d.op == Op::kAppend) {
    d.status = !job.hashed ? job.hashed
                           : blob->write(job.offset, std::string_view(static_cast<const char*>(job.bytes.data()),
                                                                      job.bytes.size()));
  } else {
    d.status = blob->commit(job.declared);
  }
  d.received = blob->received();
  // A failed append or any commit ends the upload: its temp file is gone or renamed.
  if (!d.status || d.op == Op::kCommit) {
    std::lock_guard lock(mu_);
    blobs_.erase(job.upload);
  }
  return d;
}

void BlobWriter::finish(Done done) {
  bool was_empty;
  {
    std::lock_guard lock(mu_);
    was_empty = done_.empty();
    done_.push_back(std::move(done));
  }
  if (was_empty) {
    const std::uint64_t one = 1;
    (void)::write(ready_.get(), &one, sizeof one);  // cannot fail short of a counter overflow
  }
}

}  // namespace kbfleet::broker
