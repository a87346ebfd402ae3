#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit/property tests, in-process and process cluster
# tests, and the Azure SDK compatibility suite (Python, in a local virtualenv). Works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
export RUST_BACKTRACE=1 CARGO_INCREMENTAL=0

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# The fault campaign's tools: network namespaces and nftables (partitions), FUSE (a disk that drops
# unsynced writes; fusermount3 when not root), libfaketime (clock steps).
ensure_debian_packages iproute2 nftables fuse3 libfaketime
if [ -f scripts/python-venv.sh ]; then
  bash scripts/python-venv.sh
fi

# Everything builds on the release profile, the one `scripts/dev.sh` uses, so RocksDB's C++ is compiled
# once per machine (Cargo.toml explains the build-override that makes clippy share it too).
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
# Process-cluster tests run the real binary; build it first (they find it next to the test executables).
# The campaign's planted bugs need a second binary (replication/src/planted.rs); built first, so the
# plain build after it leaves the real `trestle` in place.
cargo build --release --locked -p trestle-storage-node --features planted-bugs --bin trestle
cp "$CARGO_TARGET_DIR/release/trestle" "$CARGO_TARGET_DIR/release/trestle-planted"
cargo build --release --locked -p trestle-storage-node --bin trestle
if cmp -s "$CARGO_TARGET_DIR/release/trestle" "$CARGO_TARGET_DIR/release/trestle-planted"; then
  echo "test: the planted-bugs binary is the plain one; refusing to run" >&2
  exit 1
fi
cargo nextest run --release --workspace --locked --no-fail-fast "$@"
