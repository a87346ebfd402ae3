#!/usr/bin/env bash
# Runs Trestle: a local three-replica cluster in one process, data under ./trestle-data, the Azure Table
# REST API on http://127.0.0.1:10002/devstoreaccount1. Extra arguments go to `trestle dev`
# (see `trestle dev --help`). The first run builds an optimized binary (about 15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --locked -p trestle-storage-node --bin trestle
exec "$CARGO_TARGET_DIR/release/trestle" dev "$@"
