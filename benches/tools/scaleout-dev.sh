#!/usr/bin/env bash
# A hot table on the real binary: `trestle dev --nodes NODES --ranges 1` (every node in one process,
# RocksDB under a temporary directory, Raft over gRPC on loopback, every write fsynced by a majority),
# one table of 64 partitions with 20,000 preloaded 1 KiB records, driven by `trestle-bench` (64 clients,
# closed loop) with inserts and point reads, over gRPC (the Rust SDK, every node as a seed) and REST
# (node 1, the only REST node). Two phases, each on a fresh data directory:
#
#   one-range  `[partition-manager] split-load-ops = 0`: the table stays in one range
#   split      `split-load-ops = SPLIT_LOAD_OPS` with 1 s scheduler rounds: inserts run for at least
#              MIN_SPLIT_SECS and until the scheduler has neither split a range nor moved a replica
#              for SETTLE_SECS (at most MAX_SPLIT_SECS), then the same measurements (which are load
#              too: the scheduler may go on splitting during them; `describe` before and after each
#              says so)
#
# What `trestle dev` does by itself, and what the phases therefore measure: with NODES > 3 it turns on
# `[partition-manager] balance-replicas`, so the partition manager moves replicas from nodes 1-3 (which
# hold every range at bootstrap) onto nodes 4 and 5 until no node holds two more than another, one move
# per 1 s round, and only in rounds without a split; and it keeps every range's leader on node 1 while
# node 1 holds a replica of it. A range the balancer moved off node 1 is led elsewhere, and node 1 (the
# REST node) forwards its requests. Before measuring, each phase waits until replica placement has not
# changed for SETTLE_SECS, and it records where the ranges, replicas and leaders ended up (`describe`,
# status-<phase>.json) and every replica move the scheduler made with its snapshot's size and
# streaming time from the server's log (moves-<phase>.txt).
#
# Each measurement is ROUNDS rounds of DURATION after WARMUP; the summary quotes the median round and
# the range of the rounds. The server's CPU per operation comes from /proc (--server-pid). Stops only the
# processes it started (by PID) and removes its temporary directory. Writes $RESULTS (default
# benches/results/scaleout-dev/): raw/<phase>-<protocol>-<workload>.json, status-<phase>.json (ranges,
# leaders, replicas at the end of the phase), moves-<phase>.txt, log.txt, summary.md.
#
# Before measuring, each phase probes one client's read latency through every node (NO_PROBE=1 skips it).
#
# Knobs: NODES=5 ROUNDS=3 DURATION=5s WARMUP=1s CLIENTS=64 PROTOCOLS="grpc rest" PHASES="one-range
#   split" SPLIT_LOAD_OPS=1000 SETTLE_SECS=10 MIN_SPLIT_SECS=30 MAX_SPLIT_SECS=90 MAX_SETTLE_SECS=60;
#   TRESTLE, BENCH
#   (binaries; default the release builds in $CARGO_TARGET_DIR, built first unless SKIP_BUILD is set).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/trestle-dev.sh"
BENCHES=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/trestle/target}
RESULTS=${RESULTS:-$BENCHES/results/scaleout-dev}
NODES=${NODES:-5}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CLIENTS=${CLIENTS:-64}
PROTOCOLS=${PROTOCOLS:-grpc rest}
PHASES=${PHASES:-one-range split}
SPLIT_LOAD_OPS=${SPLIT_LOAD_OPS:-1000}
SETTLE_SECS=${SETTLE_SECS:-10}
MIN_SPLIT_SECS=${MIN_SPLIT_SECS:-30}
MAX_SPLIT_SECS=${MAX_SPLIT_SECS:-90}
MAX_SETTLE_SECS=${MAX_SETTLE_SECS:-60}
PARTITIONS=64
RECORDS=20000
TABLE=hot
TRESTLE=${TRESTLE:-$CARGO_TARGET_DIR/release/trestle}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/trestle-bench}

if [[ -z "${SKIP_BUILD:-}" ]]; then
    (cd "$BENCHES/.." && cargo build --release -p trestle-storage-node --bin trestle -p trestle-benches --bin trestle-bench) >&2
fi

mkdir -p "$RESULTS/raw"
LOG="$RESULTS/log.txt"
: >"$LOG"
say() { echo "== $*" | tee -a "$LOG" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/trestle-scaleout-dev.XXXXXX")
TRESTLE_PID=""
LOAD_PID=""
stop_pid() {
    if [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$LOAD_PID"
    stop_pid "$TRESTLE_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say "trestle $(git -C "$BENCHES" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, $(uptime)"
"$BENCH" fsync-rate --dir "$WORK" --duration 3s 2>&1 | tee -a "$LOG" >&2

ctl() { "$TRESTLE" ctl --addr "$FIRST_GRPC" --admin-token-file "$DATA/cluster-token" "$@"; }

# The data ranges (not the meta group, range 1) as `ctl status --json` reports them: one line per range,
# "RANGE LEADER REPLICA-NODES" (the hot table is the only table, so these are its ranges). A node still
# reporting a replica it was removed from is listed until it destroys it.
ranges() {
    ctl status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
reps = {}
lead = {}
for r in s["replicas"]:
    if r["range"] == 1:
        continue
    reps.setdefault(r["range"], set()).add(r["node"])
    if r["role"] == "leader":
        lead[r["range"]] = r["node"]
for g in sorted(reps, key=lambda g: (g != 2, g)):
    print(g, lead.get(g, 0), ",".join(str(n) for n in sorted(reps[g])))
'
}

# One line: how many data ranges, and how many each node leads and holds.
describe() {
    ranges | python3 -c '
import sys
n = int(sys.argv[1])
rows = [l.split() for l in sys.stdin if l.strip()]
leads = [sum(1 for r in rows if int(r[1]) == i) for i in range(1, n + 1)]
holds = [sum(1 for r in rows if str(i) in r[2].split(",")) for i in range(1, n + 1)]
print(f"{len(rows)} data ranges; leaders per node {leads}; replicas per node {holds}")
' "$NODES"
}

# What placement is: every range with the nodes holding it, and whether the scheduler is mid-move.
placement() {
    echo "$(ranges | awk '{print $1, $3}' | tr '\n' ' ') | $(ctl status | sed -n 's/^range scheduler: \(moving\).*/\1/p')"
}

now() { date +%s.%N; }
secs_since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
older_than() { python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) >= float(sys.argv[3]) else 1)" "$1" "$(now)" "$2"; }

# Waits until placement has not changed for SETTLE_SECS (at most MAX_SETTLE_SECS).
settle() { # PHASE
    local start changed last cur
    start=$(now)
    changed=$start
    last=$(placement)
    while ! older_than "$changed" "$SETTLE_SECS"; do
        if older_than "$start" "$MAX_SETTLE_SECS"; then
            say "$1: placement still changing after ${MAX_SETTLE_SECS} s; measuring anyway"
            break
        fi
        sleep 0.5
        cur=$(placement)
        if [[ "$cur" != "$last" ]]; then
            last=$cur
            changed=$(now)
        fi
    done
    say "$1: placement settled ($(secs_since "$start") s waited): $(describe)"
}

start_dev() { # PHASE SPLIT_LOAD_OPS
    DATA="$WORK/$1"
    printf '[partition-manager]\nsplit-bytes = 0\nsplit-load-ops = %s\nschedule-interval-ms = 1000\n' "$2" >"$WORK/$1.toml"
    "$TRESTLE" dev --data "$DATA" --nodes "$NODES" --ranges 1 --rest-addr 127.0.0.1:0 --grpc-port 0 \
        --config "$WORK/$1.toml" >"$WORK/$1.stdout" 2>"$WORK/$1.stderr" &
    TRESTLE_PID=$!
    wait_trestle_ready "$TRESTLE_PID" "$WORK/$1.stdout" "$WORK/$1.stderr" || exit 1
    say "$1: trestle dev --nodes $NODES --ranges 1, split-load-ops $2: pid $TRESTLE_PID, gRPC $TRESTLE_GRPC"
}

bench() { # PROTOCOL ARGS...
    local proto=$1
    shift
    local target="grpc:$TRESTLE_GRPC"
    [[ "$proto" == rest ]] && target="rest:$TRESTLE_REST"
    echo "\$ trestle-bench run --target $target $*" >>"$LOG"
    "$BENCH" run --target "$target" --table "$TABLE" --partitions "$PARTITIONS" --records "$RECORDS" \
        --concurrency "${CONCURRENCY:-$CLIENTS}" --server-pid "$TRESTLE_PID" --no-progress "$@" 2>&1 | tee -a "$LOG" >&2
}

# One client's point reads for 2 s through the SDK with every node as a seed, and through each node
# alone: what a single request costs where the partition's range is led, followed, or not held at all
# (a node without a replica finds the leader by asking its peers in turn, see cluster.rs `route`).
probe() { # PHASE
    local proto target addr i=1
    say "$1: one client's reads, through every node as seeds, then each node alone"
    CONCURRENCY=1 bench grpc --workload read --skip-load --rounds 1 --duration 2s --warmup 1s \
        --json "$RESULTS/raw/$1-probe-all.json"
    for addr in ${TRESTLE_GRPC//,/ }; do
        "$BENCH" run --target "grpc:$addr" --table "$TABLE" --partitions "$PARTITIONS" --records "$RECORDS" \
            --concurrency 1 --server-pid "$TRESTLE_PID" --no-progress --workload read --skip-load --rounds 1 \
            --duration 2s --warmup 1s --json "$RESULTS/raw/$1-probe-node$i.json" 2>&1 | sed "s/^/node $i: /" | tee -a "$LOG" >&2
        i=$((i + 1))
    done
}

preload() {
    say "preloading $RECORDS records over $PARTITIONS partitions"
    bench grpc --workload read --rounds 1 --duration 1s --warmup 0s >/dev/null
}

measure() { # PHASE
    local proto
    for proto in $PROTOCOLS; do
        say "$1 / $proto: $(describe) ($(uptime | sed 's/.*load/load/'))"
        bench "$proto" --workload insert --skip-load --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
            --json "$RESULTS/raw/$1-$proto-insert.json"
        bench "$proto" --workload read --skip-load --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
            --json "$RESULTS/raw/$1-$proto-read.json"
    done
    ctl status --json >"$RESULTS/status-$1.json"
    say "$1 at the end: $(describe)"
}

# Inserts until the scheduler has left the table alone (no split, no move) for SETTLE_SECS after its
# first split (which may already have happened under the preload), or MAX_SPLIT_SECS passed.
split_under_load() { # PHASE
    "$BENCH" run --target "grpc:$TRESTLE_GRPC" --table "$TABLE" --partitions "$PARTITIONS" --workload insert \
        --concurrency "$CLIENTS" --duration "${MAX_SPLIT_SECS}s" --warmup 0s --no-progress >"$WORK/$1-split.log" 2>&1 &
    LOAD_PID=$!
    local start count last_count changed first="" cur last
    start=$(now)
    changed=$start
    last=$(placement)
    last_count=$(ranges | wc -l)
    # The preload's batches count as load too: the scheduler may have split the range already.
    say "$1: at the start of the insert load: $(describe)"
    [[ "$last_count" == 1 ]] || first=0.0
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        sleep 0.5
        cur=$(placement)
        [[ "$cur" == "$last" ]] || { last=$cur; changed=$(now); }
        count=$(ranges | wc -l)
        if [[ "$count" != "$last_count" ]]; then
            last_count=$count
            [[ -n "$first" ]] || first=$(secs_since "$start")
            say "$1: $count ranges after $(secs_since "$start") s: $(describe)"
        fi
        if [[ -n "$first" ]] && older_than "$start" "$MIN_SPLIT_SECS" && older_than "$changed" "$SETTLE_SECS"; then
            break
        fi
    done
    stop_pid "$LOAD_PID"
    LOAD_PID=""
    say "$1: first split after ${first:-never} s, placement last changed after $(python3 -c "print(f'{$changed - $start:.1f}')") s; $(describe)"
    say "$1: range scheduler: $(ctl status | sed -n 's/^range scheduler: //p')"
}

# The scheduler's replica moves in the server's log: one line per move with its snapshot (bytes, and the
# time from the receiver fencing its replica to the snapshot received), and the move's whole time.
moves() { # PHASE
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/$1.stderr" | python3 -c '
import re, sys
from datetime import datetime
def ts(line):
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
def kv(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))
started, fenced, moves = {}, {}, []
sent = {}
for line in sys.stdin:
    if "range scheduler: moving a replica" in line:
        f = kv(line); started[f["range"]] = (ts(line), f["from"], f["to"])
    elif "receiving a snapshot; replica fenced" in line:
        f = kv(line); fenced[(f["group"], f["node"])] = ts(line)
    elif "snapshot received" in line:
        f = kv(line); key = (f["group"], f["node"])
        if key in fenced:
            sent.setdefault(key, []).append(ts(line) - fenced.pop(key))
    elif "snapshot sent" in line:
        f = kv(line); sent.setdefault(("bytes", f["group"], f["to"]), []).append(int(f["bytes"]))
    elif "replica moved" in line:
        f = kv(line)
        if f["range"] in started:
            t0, a, b = started.pop(f["range"])
            secs = sent.get((f["range"], f["to"]), [None])[-1]
            size = sent.get(("bytes", f["range"], f["to"]), [None])[-1]
            moves.append((f["range"], a, b, size, secs, ts(line) - t0))
print(f"{len(moves)} replica moves by the scheduler")
for r, a, b, size, secs, whole in moves:
    rate = f"{size / 1048576 / secs:.0f} MiB/s" if size and secs else "-"
    if size is None or secs is None:
        # Likely a young range (the new half of a split) whose log is still whole: no snapshot needed.
        print(f"range {r}: node {a} -> {b}; no snapshot logged; move {whole * 1000:.0f} ms")
        continue
    print(f"range {r}: node {a} -> {b}; snapshot {size / 1048576:.2f} MiB streamed in {secs * 1000:.0f} ms ({rate}); move {whole * 1000:.0f} ms")
' >"$RESULTS/moves-$1.txt"
    say "$1: $(head -1 "$RESULTS/moves-$1.txt") (moves-$1.txt)"
}

stop_dev() {
    stop_pid "$TRESTLE_PID"
    TRESTLE_PID=""
}

for phase in $PHASES; do
    case "$phase" in
        one-range)
            start_dev one-range 0
            preload
            settle one-range
            [[ -n "${NO_PROBE:-}" ]] || probe one-range
            measure one-range
            ;;
        split)
            start_dev split "$SPLIT_LOAD_OPS"
            preload
            split_under_load split
            settle split
            [[ -n "${NO_PROBE:-}" ]] || probe split
            measure split
            ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
    moves "$phase"
    stop_dev
done

python3 - "$RESULTS/raw" "$NODES" "$PHASES" "$PROTOCOLS" <<'EOF' | tee "$RESULTS/summary.md" | tee -a "$LOG"
import json, os, sys
raw, nodes, phases, protocols = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
print(f"`trestle dev --nodes {nodes} --ranges 1`; median round (lowest–highest round).\n")
print("| phase | protocol | inserts/s | insert p99 | server CPU µs/insert | reads/s | read p99 | server CPU µs/read |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
def cell(runs, key, scale=1.0, fmt="{:,.0f}"):
    xs = sorted(x for x in (key(r) if callable(key) else r[key] * scale for r in runs) if x is not None)
    if not xs:
        return "-"
    med = xs[len(xs) // 2]
    return f"{fmt.format(med)} ({fmt.format(xs[0])}–{fmt.format(xs[-1])})" if len(xs) > 1 else fmt.format(med)
def median(path, key):
    if not os.path.exists(path):
        return None
    xs = sorted(r[key] for r in json.load(open(path))["a"])
    return xs[len(xs) // 2]
for phase in phases:
    for proto in protocols:
        row = [phase, proto]
        for w in ("insert", "read"):
            p = os.path.join(raw, f"{phase}-{proto}-{w}.json")
            if not os.path.exists(p):
                row += ["-", "-", "-"]
                continue
            runs = json.load(open(p))["a"]
            row.append(cell(runs, "ops_per_sec"))
            row.append(cell(runs, lambda r: r["latency"]["p99_us"] / 1000, fmt="{:.1f} ms"))
            row.append(cell(runs, lambda r: (r.get("cpu") or {}).get("server_us"), fmt="{:.0f}"))
            errors = sum(sum(r["errors"].values()) for r in runs)
            if errors:
                row[-3] += f" ({errors} errors)"
        print("| " + " | ".join(row) + " |")
probes = [(phase, w) for phase in phases for w in ["all"] + [f"node{i}" for i in range(1, int(nodes) + 1)]]
if any(os.path.exists(os.path.join(raw, f"{p}-probe-{w}.json")) for p, w in probes):
    print("\nOne client's point reads (2 s): p50 latency and reads/s, through the SDK with every node as a seed and through each node alone:\n")
    print("| phase | every node | " + " | ".join(f"node {i}" for i in range(1, int(nodes) + 1)) + " |")
    print("|---|" + "---:|" * (int(nodes) + 1))
    for phase in phases:
        row = [phase]
        for w in ["all"] + [f"node{i}" for i in range(1, int(nodes) + 1)]:
            p = os.path.join(raw, f"{phase}-probe-{w}.json")
            if not os.path.exists(p):
                row.append("-")
                continue
            r = json.load(open(p))["a"][0]
            row.append(f"{r['latency']['p50_us'] / 1000:.2f} ms, {r['ops_per_sec']:,.0f}/s")
        print("| " + " | ".join(row) + " |")
if "one-range" in phases and len(phases) > 1:
    print("\nMedian throughput of each phase ÷ one range's:\n")
    for phase in phases[1:]:
        for proto in protocols:
            parts = []
            for w in ("insert", "read"):
                a = median(os.path.join(raw, f"{phase}-{proto}-{w}.json"), "ops_per_sec")
                b = median(os.path.join(raw, f"one-range-{proto}-{w}.json"), "ops_per_sec")
                parts.append(f"{w}s {a / b:.2f}×" if a and b else f"{w}s -")
            print(f"- {phase}, {proto}: " + ", ".join(parts))
EOF
say "done: $RESULTS"
