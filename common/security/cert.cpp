#include "common/security/cert.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include <zmq.h>

namespace kbfleet::security {
namespace {

std::string certificate_text(const KeyPair& keys, bool with_secret) {
  std::string s;
  s += with_secret ? "#   ZeroMQ CURVE **Secret** Certificate (kbfleet keygen)\n"
                     "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
                   : "#   ZeroMQ CURVE Public Certificate (kbfleet keygen)\n"
                     "#   Exchange securely, or use a secure mechanism to verify the contents\n"
                     "#   of this file after exchange. Store public certificates in your home\n"
                     "#   directory, in the .curve subdirectory.\n\n";
  s += "metadata\ncurve\n    public-key = \"" + keys.public_key + "\"\n";
  if (with_secret) s += "    secret-key = \"" + keys.secret_key + "\"\n";
  return s;
}

Status write_new_file(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return errno_error("open", path, errno);
  // The umask may have narrowed the mode; a public certificate should still be world-readable.
  if (::fchmod(fd, mode) != 0) {
    int err = errno;
    ::close(fd);
    return errno_error("fchmod", path, err);
  }
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return errno_error("write", path, err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) return errno_error("close", path, errno);
  return {};
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return errno_error("open", path, errno);
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().size() > 64 * 1024) {
    return make_error(ErrorCode::kInvalidArgument, "certificate " + path + " is larger than 64 KiB; is it a certificate?");
  }
  return ss.str();
}

// The quoted value of `name = "..."` in the curve section, or "" if absent.
std::string field(const std::string& text, std::string_view name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.compare(start, name.size(), name) != 0) continue;
    auto eq = line.find('=', start + name.size());
    if (eq == std::string::npos || line.find_first_not_of(" \t", start + name.size()) != eq) continue;
    auto open = line.find('"', eq);
    auto close = open == std::string::npos ? open : line.find('"', open + 1);
    if (close == std::string::npos) continue;
    return line.substr(open + 1, close - open - 1);
  }
  return "";
}

}  // namespace

bool valid_z85_key(std::string_view key) {
  if (key.size() != kZ85KeyLength) return false;
  std::string copy(key);
  std::uint8_t bytes[32];
  return zmq_z85_decode(bytes, copy.c_str()) != nullptr;
}

Result<KeyPair> generate_keypair() {
  char pub[41] = {};
  char sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return make_error(ErrorCode::kInternal, std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()) +
                                                " (is libzmq built with CURVE support?)");
  }
  return KeyPair{pub, sec};
}

Status write_certificates(const std::string& base, const KeyPair& keys) {
  if (auto st = write_new_file(base + ".key", certificate_text(keys, true), 0600); !st) return st;
  return write_new_file(base + ".pub", certificate_text(keys, false), 0644);
}

Result<KeyPair> load_secret_certificate(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno_error("stat", path, errno);
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(ErrorCode::kInvalidArgument,
                      "secret key file " + path + " has mode " + mode +
                          ", readable or writable by others; refusing it (run `chmod 600 " + path + "`)",
                      {{"path", path}});
  }
  auto text = read_file(path);
  if (!text) return tl::unexpected(text.error());
  KeyPair keys{field(*text, "public-key"), field(*text, "secret-key")};
  if (keys.secret_key.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      path + " has no secret-key; pass the .key file written by `kbfleet keygen`, not the .pub", {{"path", path}});
  }
  if (!valid_z85_key(keys.secret_key)) {
    return make_error(ErrorCode::kInvalidArgument, path + ": secret-key is not a 40-character Z85 key", {{"path", path}});
  }
  char derived[41] = {};
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0) {
    return make_error(ErrorCode::kInvalidArgument, path + ": cannot derive the public key from secret-key", {{"path", path}});
  }
  if (keys.public_key.empty()) keys.public_key = derived;
  if (keys.public_key != derived) {
    return make_error(ErrorCode::kInvalidArgument, path + ": public-key does not belong to secret-key", {{"path", path}});
  }
  return keys;
}

Result<std::string> load_public_key(const std::string& path) {
  auto text = read_file(path);
  if (!text) return tl::unexpected(text.error());
  std::string key = field(*text, "public-key");
  if (!valid_z85_key(key)) {
    return make_error(ErrorCode::kInvalidArgument,
                      path + " has no valid public-key (40 Z85 characters); pass a certificate written by `kbfleet keygen`",
                      {{"path", path}});
  }
  return key;
}

}  // namespace kbfleet::security
