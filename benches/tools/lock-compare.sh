#!/usr/bin/env bash
# Trestle's lock manager vs a three-member etcd cluster's lock service (issue 8), in one run on this machine.
#
# Installs etcd-server with apt if `etcd` is missing, starts a three-member etcd cluster (three processes,
# free 127.0.0.1 ports, data in a temporary directory, WAL fsynced as by default: no --unsafe-no-fsync)
# and `trestle dev` (three replicas in one process, every Raft append fsynced), then runs, with the
# `trestle-bench` harness, each lock workload against both in turns (Trestle, etcd, Trestle, etcd, ...;
# ROUNDS rounds each, medians):
#
#   lock          LOCK_CLIENTS clients, each on its own lock: acquire + release in a loop
#   lock-handoff  HANDOFF_CLIENTS clients on ONE lock, each releasing at once (or after HOLD): the time
#                 from a holder sending release to the next waiter's acquire returning
#
# Trestle is driven through the SDK's LockClient (signed gRPC, leader-aware); etcd through its v3lock
# service (Lock/Unlock under a lease granted per client). ETCD_ENDPOINTS=leader (default) sends every etcd
# call to the etcd leader, etcd's best case; ETCD_ENDPOINTS=all spreads the clients over the three
# members, as etcd's Go client balances. Stops only the processes it started (by PID), removes its
# temporary directory. Writes $RESULTS (default benches/results/lock-compare/): raw/*.json, log.txt,
# summary.md.
#
# Knobs: ROUNDS=5 DURATION=5s WARMUP=1s LOCK_CLIENTS=16 HANDOFF_CLIENTS=8 HOLD=0s ETCD_ENDPOINTS=leader
#   TRESTLE, BENCH (binaries; default the release builds in $CARGO_TARGET_DIR).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/trestle-dev.sh"
BENCHES=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/trestle/target}
RESULTS=${RESULTS:-$BENCHES/results/lock-compare}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
LOCK_CLIENTS=${LOCK_CLIENTS:-16}
HANDOFF_CLIENTS=${HANDOFF_CLIENTS:-8}
HOLD=${HOLD:-0s}
ETCD_ENDPOINTS=${ETCD_ENDPOINTS:-leader}
TRESTLE=${TRESTLE:-$CARGO_TARGET_DIR/release/trestle}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/trestle-bench}

for b in "$TRESTLE" "$BENCH"; do
    [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p trestle-storage-node --bin trestle; cargo build --release -p trestle-benches --bin trestle-bench" >&2; exit 1; }
done
if ! command -v etcd >/dev/null; then
    echo "== installing etcd-server (apt)" >&2
    apt-get install -y etcd-server >&2 || { apt-get update >&2 && apt-get install -y etcd-server >&2; }
fi

mkdir -p "$RESULTS/raw"
LOG="$RESULTS/log.txt"
: >"$LOG"
say() { echo "== $*" | tee -a "$LOG" >&2; }

WORK=$(mktemp -d /var/tmp/trestle-lock-compare.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- etcd: three members ---------------------------------------------------------------------------------
declare -a CLIENT PEER ETCD_PID
CLUSTER=""
for i in 1 2 3; do
    CLIENT[$i]=$(free_port)
    PEER[$i]=$(free_port)
    CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:${PEER[$i]}"
done
for i in 1 2 3; do
    etcd --name "m$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${CLIENT[$i]}" --advertise-client-urls "http://127.0.0.1:${CLIENT[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${PEER[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${PEER[$i]}" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "lock-compare-$$" \
        --logger zap --log-level warn >"$WORK/etcd$i.log" 2>&1 &
    ETCD_PID[$i]=$!
    PIDS+=("${ETCD_PID[$i]}")
done
etcd_healthy() { curl -sf "http://127.0.0.1:${CLIENT[$1]}/health" | grep -q '"health":"true"'; }
for _ in $(seq 1 300); do
    etcd_healthy 1 && etcd_healthy 2 && etcd_healthy 3 && break
    sleep 0.1
done
for i in 1 2 3; do etcd_healthy "$i" || { cat "$WORK/etcd$i.log" >&2; echo "etcd member $i is not healthy" >&2; exit 1; }; done
# The leader: the member whose own ID is the leader ID it reports (grpc-gateway's JSON status).
etcd_leader() {
    local i
    for i in 1 2 3; do
        curl -sf -X POST -d '{}' "http://127.0.0.1:${CLIENT[$i]}/v3/maintenance/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["header"]["member_id"] == s["leader"] else 1)' && { echo "$i"; return 0; }
    done
    return 1
}
LEADER=$(etcd_leader) || { echo "no etcd leader" >&2; exit 1; }
if [[ "$ETCD_ENDPOINTS" == all ]]; then
    ETCD_ADDRS="127.0.0.1:${CLIENT[1]},127.0.0.1:${CLIENT[2]},127.0.0.1:${CLIENT[3]}"
else
    ETCD_ADDRS="127.0.0.1:${CLIENT[$LEADER]}"
fi
say "etcd $(etcd --version | head -1 | awk '{print $3}'): pids ${ETCD_PID[*]}, clients on ports ${CLIENT[*]}, leader m$LEADER; the bench uses $ETCD_ADDRS"

# --- Trestle ---------------------------------------------------------------------------------------------
"$TRESTLE" dev --data "$WORK/trestle" --rest-addr 127.0.0.1:0 --grpc-port 0 \
    >"$WORK/trestle.stdout" 2>"$WORK/trestle.stderr" &
TRESTLE_PID=$!
PIDS+=("$TRESTLE_PID")
wait_trestle_ready "$TRESTLE_PID" "$WORK/trestle.stdout" "$WORK/trestle.stderr" || exit 1
wait_leaders_on_node1 "$WORK/trestle/cluster-token" || say "warning: not every range is led by node 1"
say "trestle dev: pid $TRESTLE_PID, gRPC $TRESTLE_GRPC"
say "trestle $(git -C "$BENCHES" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, $(uptime)"

# --- the comparison --------------------------------------------------------------------------------------
COMMON=(--rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --no-progress)
run() { # WORKLOAD CLIENTS EXTRA...
    local w=$1 c=$2
    shift 2
    say "$w: $c clients ($(uptime | sed 's/.*load/load/'))"
    echo "\$ trestle-bench run --target trestle=grpc:$TRESTLE_GRPC --compare etcd=etcd:$ETCD_ADDRS --workload $w --concurrency $c ${COMMON[*]} $*" >>"$LOG"
    "$BENCH" run --target "trestle=grpc:$TRESTLE_GRPC" --compare "etcd=etcd:$ETCD_ADDRS" --workload "$w" \
        --concurrency "$c" "${COMMON[@]}" "$@" --json "$RESULTS/raw/$w.json" 2>&1 | tee -a "$LOG" >&2
}
run lock "$LOCK_CLIENTS"
run lock-handoff "$HANDOFF_CLIENTS" --lock-hold "$HOLD"
leaders_on_node1 "$WORK/trestle/cluster-token" || say "warning: a range is no longer led by node 1 at the end of the run"
say "etcd leader at the end: m$(etcd_leader || echo '?') (m$LEADER at the start)"

python3 - "$RESULTS/raw/lock.json" "$RESULTS/raw/lock-handoff.json" "$LOCK_CLIENTS" "$HANDOFF_CLIENTS" "$HOLD" \
    <<'EOF' | tee "$RESULTS/summary.md" | tee -a "$LOG"
import json, sys
lock, handoff = (json.load(open(p)) for p in sys.argv[1:3])
clients, handoff_clients, hold = sys.argv[3:6]
def ms(us): return f"{us / 1000:.2f} ms"
def ratio(a, b): return f"{a / b:.2f}×" if b else "n/a"
t, e = lock["a_median"], lock["b_median"]
print(f"Medians of {len(lock['a'])} rounds per system, Trestle and etcd in turns.\n")
print(f"Uncontended ({clients} clients, each on its own lock; one operation = acquire + release):\n")
print("| | Trestle | etcd | Trestle/etcd |\n|---|---:|---:|---:|")
print(f"| acquire+release per second | {t['ops_per_sec']:,.0f} | {e['ops_per_sec']:,.0f} | **{ratio(t['ops_per_sec'], e['ops_per_sec'])}** |")
for k, name in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
    print(f"| {name} latency | {ms(t[k])} | {ms(e[k])} | {ratio(t[k], e[k])} |")
print(f"| errors | {t['errors']} | {e['errors']} | |")
t, e = handoff["a_median"], handoff["b_median"]
print(f"\nHand-off ({handoff_clients} clients on one lock, hold {hold}; latency = release sent → next waiter's acquire returned):\n")
print("| | Trestle | etcd | Trestle/etcd |\n|---|---:|---:|---:|")
print(f"| hand-offs per second | {t['entities_per_sec']:,.0f} | {e['entities_per_sec']:,.0f} | **{ratio(t['entities_per_sec'], e['entities_per_sec'])}** |")
for k, name in (("p50_us", "p50"), ("p99_us", "p99"), ("max_us", "max")):
    print(f"| hand-off {name} | {ms(t[k])} | {ms(e[k])} | {'**' if name == 'p99' else ''}{ratio(t[k], e[k])}{'**' if name == 'p99' else ''} |")
print(f"| acquisitions per second (hand-offs and free grants) | {t['ops_per_sec']:,.0f} | {e['ops_per_sec']:,.0f} | |")
print(f"| errors | {t['errors']} | {e['errors']} | |")
ok_rate = lock["a_median"]["ops_per_sec"] >= lock["b_median"]["ops_per_sec"]
ok_p99 = handoff["a_median"]["p99_us"] <= handoff["b_median"]["p99_us"]
print(f"\nGoal 1, uncontended rate ≥ etcd's: {'met' if ok_rate else 'missed'}; "
      f"goal 2, hand-off p99 ≤ etcd's: {'met' if ok_p99 else 'missed'}.")
EOF
say "done: $RESULTS"
