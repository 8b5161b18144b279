#pragma once
// Incremental SHA-256 (OpenSSL EVP) with lowercase hex output, for artifacts and the CAS.
#include <memory>
#include <string>
#include <string_view>

#include "common/errors/error.hpp"

namespace kbfleet::hash {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view bytes);
  void update(const void* data, std::size_t size);
  // Lowercase hex digest; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string sha256_hex(std::string_view bytes);
// Hashes a file by streaming it; IO_ERROR naming the path on failure.
Result<std::string> sha256_file(int dir_fd, const std::string& path);
// True if `s` is 64 lowercase hex characters.
bool is_sha256_hex(std::string_view s);

}  // namespace kbfleet::hash
