#!/usr/bin/env bash
# Installs kbfleet's build and test dependencies from Debian 12 packages (run as root).
# Skips apt entirely when everything is already installed, so repeated runs are fast.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache   # toolchain
  libzmq3-dev cppzmq-dev          # ZeroMQ and its C++ binding: every socket
  libmsgpack-cxx-dev              # message bodies
  libspdlog-dev libfmt-dev        # logging
  prometheus-cpp-dev              # /metrics
  libcli11-dev                    # command-line parsing
  nlohmann-json3-dev              # JSON input, fd-3 lines, --json output
  libyaml-cpp-dev                 # kbfleet.yaml manifests
  libssl-dev                      # SHA-256 of artifacts
  libexpected-dev                 # tl::expected (Result<T>)
  libseccomp-dev libsodium-dev libsqlite3-dev   # sandbox, CURVE, journal (later issues)
  libnftables-dev iproute2        # network allow-lists: nftables rules and veths per slot
  catch2                          # tests
  curl prometheus                 # tests scrape /metrics and check it with promtool
  python3-zmq python3-msgpack     # the independent Python protocol client test
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
