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
if [ -f scripts/python-venv.sh ]; then
  bash scripts/python-venv.sh
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Process-cluster tests run the real binary; build it first (they find it next to the test executables).
cargo build --locked -p trestle-storage-node --bin trestle
cargo nextest run --workspace --locked --no-fail-fast "$@"
