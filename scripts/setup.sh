#!/usr/bin/env bash
# Installs what building Trestle needs on a fresh Debian/Ubuntu machine and prints the environment to use.
# Idempotent: a second run does nothing but checks. Source it (`. scripts/setup.sh`) or run it.
set -euo pipefail

# Installs the Debian packages among "$@" that are missing (one apt run for all of them).
ensure_debian_packages() {
  local need=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# bindgen (librocksdb-sys) needs libclang; g++, make and pkg-config build RocksDB's C++.
ensure_debian_packages libclang-dev g++ make pkg-config
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

# One build cache outside the clone: a fresh clone on the same machine rebuilds only Trestle's crates,
# not RocksDB's C++ (which is 90 % of a cold build).
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/trestle/target 2>/dev/null && [ -w /var/cache/trestle/target ]; then
    export CARGO_TARGET_DIR=/var/cache/trestle/target
  else
    export CARGO_TARGET_DIR="$HOME/.cache/trestle/target"
    mkdir -p "$CARGO_TARGET_DIR"
  fi
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
