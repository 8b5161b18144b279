#pragma once
// CURVE key pairs in ZeroMQ's certificate text format (the zcert format of CZMQ):
//
//   metadata
//   curve
//       public-key = "<40 Z85 characters>"
//       secret-key = "<40 Z85 characters>"     (secret file only)
//
// Guarantees (tests/common/security/cert_test.cpp):
// - a secret certificate is written 0600 and its public half 0644, created with O_EXCL so an
//   existing key is never overwritten;
// - a secret certificate readable or writable by group or other is refused with a message
//   naming `chmod 600 FILE`, before its content is read;
// - keys are validated: 40 Z85 characters that decode to 32 bytes, and a secret key's public
//   half must match the public key it is stored with (zmq_curve_public).
// Secret keys never appear in an Error message.
#include <string>

#include "common/errors/error.hpp"

namespace kbfleet::security {

inline constexpr std::size_t kZ85KeyLength = 40;

struct KeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; empty for a public certificate
};

// A new key pair from libzmq (zmq_curve_keypair). INTERNAL if CURVE is not built in.
[[nodiscard]] Result<KeyPair> generate_keypair();

// Writes `<base>.key` (public + secret, 0600) and `<base>.pub` (public only, 0644).
// IO_ERROR naming the file (e.g. it already exists).
[[nodiscard]] Status write_certificates(const std::string& base, const KeyPair& keys);

// Loads a secret certificate. INVALID_ARGUMENT when its permissions are too open, it lacks a
// key or a key is malformed; IO_ERROR when it cannot be read.
[[nodiscard]] Result<KeyPair> load_secret_certificate(const std::string& path);

// Loads the public key of a certificate (a .pub file, or the public half of a .key file).
[[nodiscard]] Result<std::string> load_public_key(const std::string& path);

// True for 40 Z85 characters that decode to a 32-byte key.
bool valid_z85_key(std::string_view key);

}  // namespace kbfleet::security
