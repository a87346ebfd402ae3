#!/usr/bin/env bash
# Trestle vs Azurite, side by side, in one run on this machine.
#
# Installs Azurite with npm into benches/.azurite (once), builds the release `trestle` and `trestle-bench`
# binaries if they are missing, starts Azurite (in-memory) and `trestle dev` (three durable replicas,
# fsync on every Raft append) on free 127.0.0.1 ports, measures the disk's fsync rate, runs every workload
# against both in turns (A, B, A, B, ...: ROUNDS rounds each, medians reported), then gRPC against REST on
# Trestle, then the RSS of `trestle dev` after loading RSS_ENTITIES 1 KiB entities. Stops both servers by
# PID. Writes into benches/results/ (or $RESULTS):
#
#   summary.md          machine, commands, the Trestle/Azurite table, gRPC/REST table, RSS
#   summary.svg         throughput and latency percentiles, Trestle vs Azurite
#   grpc-vs-rest.svg    the same for Trestle's two front ends
#   raw/*.json          every round of every run (trestle-bench result files), fsync.json
#   log.txt             everything the harness printed
#
# Knobs (environment): ROUNDS=3 DURATION=10s WARMUP=2s CONCURRENCY=64 RECORDS=20000 ENTITY_SIZE=1024
#   WORKLOADS="insert read upsert merge query batch ycsb-a ycsb-b ycsb-c" RSS_ENTITIES=1000000 (0 skips)
#   DATA_DIR (where trestle dev keeps its RocksDB; default a fresh directory under /var/tmp).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/tools/trestle-dev.sh"
ROOT=$(dirname "$HERE")
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    if [[ -w /var/cache/trestle || -w /var/cache ]]; then
        export CARGO_TARGET_DIR=/var/cache/trestle/target
    else
        export CARGO_TARGET_DIR="$HOME/.cache/trestle/target"
    fi
fi
RESULTS=${RESULTS:-$HERE/results}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
RECORDS=${RECORDS:-20000}
ENTITY_SIZE=${ENTITY_SIZE:-1024}
WORKLOADS=${WORKLOADS:-"insert read upsert merge query batch ycsb-a ycsb-b ycsb-c"}
RSS_ENTITIES=${RSS_ENTITIES:-1000000}
TRESTLE="$CARGO_TARGET_DIR/release/trestle"
BENCH="$CARGO_TARGET_DIR/release/trestle-bench"
AZURITE_DIR="$HERE/.azurite"

mkdir -p "$RESULTS/raw"
LOG="$RESULTS/log.txt"
: >"$LOG"
say() { echo "== $*" | tee -a "$LOG" >&2; }

# --- tools ---------------------------------------------------------------------------------------------
command -v node >/dev/null || { echo "node (v18+) is required for Azurite" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is required for Azurite" >&2; exit 1; }
if [[ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-table" ]]; then
    say "installing Azurite into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && { [[ -f package.json ]] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund azurite@3 >>"$LOG" 2>&1)
fi
AZURITE_VERSION=$(node -p "require('$AZURITE_DIR/node_modules/azurite/package.json').version")
if [[ ! -x "$TRESTLE" ]]; then
    say "building the release trestle binary (RocksDB's C++ at -O3: ~15 minutes on 2 cores)"
    (cd "$ROOT" && cargo build --release -p trestle-storage-node --bin trestle)
fi
if [[ ! -x "$BENCH" || "${REBUILD_BENCH:-0}" == 1 ]]; then
    say "building the release trestle-bench binary"
    (cd "$ROOT" && cargo build --release -p trestle-benches --bin trestle-bench)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local port=$1 i
    for i in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $port" >&2
    return 1
}
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

# --- servers -------------------------------------------------------------------------------------------
DATA_DIR=${DATA_DIR:-$(mktemp -d /var/tmp/trestle-bench.XXXXXX)}
TRESTLE_PID=""
AZURITE_PID=""
cleanup() {
    for pid in $AZURITE_PID $TRESTLE_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    [[ "${KEEP_DATA:-0}" == 1 ]] || rm -rf "$DATA_DIR"
}
trap cleanup EXIT INT TERM

say "starting trestle dev (data in $DATA_DIR)"
"$TRESTLE" dev --data "$DATA_DIR" --rest-addr 127.0.0.1:0 --grpc-port 0 \
    >"$RESULTS/trestle.stdout" 2>"$RESULTS/trestle.stderr" &
TRESTLE_PID=$!
wait_trestle_ready "$TRESTLE_PID" "$RESULTS/trestle.stdout" "$RESULTS/trestle.stderr" || exit 1
wait_leaders_on_node1 "$DATA_DIR/cluster-token" || say "warning: not every range is led by node 1; figures include forwarding hops"

AZURITE_PORT=$(free_port)
say "starting Azurite $AZURITE_VERSION (in-memory) on 127.0.0.1:$AZURITE_PORT"
(cd "$DATA_DIR" && exec node "$AZURITE_DIR/node_modules/.bin/azurite-table" --tableHost 127.0.0.1 \
    --tablePort "$AZURITE_PORT" --inMemoryPersistence --loose --skipApiVersionCheck --silent \
    --disableTelemetry) >"$RESULTS/azurite.log" 2>&1 &
AZURITE_PID=$!
wait_port "$AZURITE_PORT"
AZURITE_REST="http://127.0.0.1:$AZURITE_PORT/devstoreaccount1"

# --- machine -------------------------------------------------------------------------------------------
say "measuring the fsync rate under $DATA_DIR"
"$BENCH" fsync-rate --dir "$DATA_DIR/fsync" --duration 5s --json "$RESULTS/raw/fsync.json" | tee -a "$LOG"
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
CORES=$(nproc)
MEM_GIB=$(awk '/^MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)
FSYNC_RATE=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("%.0f syncs/s (p50 %s µs, p99 %s µs)" % (r["syncs_per_sec"], r["latency"]["p50_us"], r["latency"]["p99_us"]))
' "$RESULTS/raw/fsync.json")

"$TRESTLE" ctl --addr "$FIRST_GRPC" --admin-token-file "$DATA_DIR/cluster-token" status >"$RESULTS/cluster-before.txt" 2>&1 || true

# --- Trestle vs Azurite --------------------------------------------------------------------------------
COMMON=(--rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY"
    --records "$RECORDS" --entity-size "$ENTITY_SIZE" --no-progress)
FILES=()
for w in $WORKLOADS; do
    say "workload $w: trestle vs azurite"
    echo "\$ trestle-bench run --target trestle=rest:$TRESTLE_REST --compare azurite=rest:$AZURITE_REST --workload $w ${COMMON[*]}" >>"$LOG"
    "$BENCH" run --target "trestle=rest:$TRESTLE_REST" --compare "azurite=rest:$AZURITE_REST" \
        --workload "$w" "${COMMON[@]}" --json "$RESULTS/raw/$w.json" 2>&1 | tee -a "$LOG"
    FILES+=("$RESULTS/raw/$w.json")
done
"$TRESTLE" ctl --addr "$FIRST_GRPC" --admin-token-file "$DATA_DIR/cluster-token" status >"$RESULTS/cluster-after.txt" 2>&1 || true
AZURITE_RSS=$(rss_mib "$AZURITE_PID")
TRESTLE_RSS_AFTER=$(rss_mib "$TRESTLE_PID")

# --- gRPC vs REST on Trestle ---------------------------------------------------------------------------
GRPC_FILES=()
for w in read insert; do
    say "workload $w: trestle gRPC vs trestle REST"
    skip=()
    [[ " $WORKLOADS " == *" $w "* && $w == read ]] && skip=(--skip-load)
    "$BENCH" run --target "grpc=grpc:$TRESTLE_GRPC" --compare "rest=rest:$TRESTLE_REST" \
        --workload "$w" "${COMMON[@]}" "${skip[@]}" --json "$RESULTS/raw/grpc-vs-rest-$w.json" 2>&1 | tee -a "$LOG"
    GRPC_FILES+=("$RESULTS/raw/grpc-vs-rest-$w.json")
done

# Azurite is done: stop it so the memory measurement has the machine to itself.
kill "$AZURITE_PID" 2>/dev/null || true
wait "$AZURITE_PID" 2>/dev/null || true

# --- memory --------------------------------------------------------------------------------------------
RSS_LINE="not measured (RSS_ENTITIES=0)"
if [[ "$RSS_ENTITIES" -gt 0 ]]; then
    say "loading $RSS_ENTITIES entities of $ENTITY_SIZE bytes into trestle (gRPC batches of 100)"
    before=$(rss_mib "$TRESTLE_PID")
    start=$(date +%s)
    "$BENCH" run --target "grpc:$TRESTLE_GRPC" --workload batch --ops $((RSS_ENTITIES / 100)) \
        --concurrency 16 --partitions 64 --warmup 0s --entity-size "$ENTITY_SIZE" --table benchrss \
        --no-progress --json "$RESULTS/raw/rss-load.json" 2>&1 | tee -a "$LOG"
    took=$(($(date +%s) - start))
    sleep 5
    after=$(rss_mib "$TRESTLE_PID")
    hwm=$(hwm_mib "$TRESTLE_PID")
    disk=$(du -sm "$DATA_DIR" | cut -f1)
    RSS_LINE="$RSS_ENTITIES entities of $ENTITY_SIZE B loaded in ${took}s: trestle dev (3 nodes in one process) RSS ${before} MiB before, ${after} MiB after (peak ${hwm} MiB), i.e. ~$((after / 3)) MiB per node; data dir ${disk} MiB"
    say "$RSS_LINE"
fi

# --- summary -------------------------------------------------------------------------------------------
"$BENCH" summarize "${FILES[@]}" --markdown "$RESULTS/table.md" --svg "$RESULTS/summary.svg" \
    --title "Trestle (3 durable replicas) vs Azurite $AZURITE_VERSION (in-memory), $CONCURRENCY clients, $ENTITY_SIZE B entities"
"$BENCH" summarize "${GRPC_FILES[@]}" --markdown "$RESULTS/grpc-vs-rest.md" --svg "$RESULTS/grpc-vs-rest.svg" \
    --title "Trestle: gRPC vs REST, $CONCURRENCY clients, $ENTITY_SIZE B entities"
{
    echo "# Trestle vs Azurite — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- Machine: $CORES cores ($CPU_MODEL), $MEM_GIB GiB RAM; load generator on the same machine"
    echo "- Disk fsync rate under the data directory (4 KiB append + fdatasync, one writer): $FSYNC_RATE"
    echo "- Trestle: \`trestle dev\` (release), three replicas in one process, RocksDB, fsync per Raft append; commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')"
    echo "- Range leaders during the run: see cluster-before.txt / cluster-after.txt (REST is served by node 1; a request for a range led elsewhere is forwarded over gRPC)"
    echo "- Azurite $AZURITE_VERSION: \`azurite-table --inMemoryPersistence --loose --skipApiVersionCheck --silent --disableTelemetry\`"
    echo "- Each workload: \`trestle-bench run --target trestle=rest:URL --compare azurite=rest:URL --workload W ${COMMON[*]}\`"
    echo "- RSS after the comparison: trestle dev ${TRESTLE_RSS_AFTER} MiB (3 nodes), Azurite ${AZURITE_RSS} MiB"
    echo
    echo "## Trestle vs Azurite (REST, $CONCURRENCY concurrent clients)"
    echo
    cat "$RESULTS/table.md"
    echo
    echo "![throughput and latency]($(basename "$RESULTS")/summary.svg)"
    echo
    echo "## Trestle gRPC vs REST"
    echo
    cat "$RESULTS/grpc-vs-rest.md"
    echo
    echo "## Memory"
    echo
    echo "$RSS_LINE"
} >"$RESULTS/summary.md"
rm -f "$RESULTS/table.md"
say "done: $RESULTS/summary.md, $RESULTS/summary.svg, $RESULTS/grpc-vs-rest.svg"
