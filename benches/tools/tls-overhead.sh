#!/usr/bin/env bash
# The cost of TLS and of gRPC call signing (issue 7), in one run on this machine.
#
# Starts three `trestle dev` clusters (release build, fresh data directories under /var/tmp, free
# 127.0.0.1 ports), identical but for TLS, all with `allow-anonymous = true` (so unsigned gRPC calls are
# served; signed ones are verified as always):
#
#   plain     no TLS anywhere
#   rest-tls  HTTPS on the REST port only ([gateway] tls-cert-file/tls-key-file); gRPC and Raft plain
#   tls       `trestle dev --tls`: HTTPS on REST, TLS on the gRPC port (public API and node-to-node)
#
# then runs, for each workload and concurrency, three comparisons in turns (A, B, A, B, ...; ROUNDS rounds
# each, medians), with the CPU time per operation of the load generator and of the server (--server-pid):
#
#   rest-tls vs rest-plain       REST over HTTPS (rest-tls cluster) vs HTTP (plain cluster)
#   grpc-signed vs grpc-unsigned the same plain cluster, calls signed with the account key or not
#   grpc-tls vs grpc-plain       signed gRPC over TLS (tls cluster) vs plain (plain cluster)
#
# All three clusters use the certificate that `trestle dev --tls` generated for the tls cluster. Stops
# the clusters by PID. Writes $RESULTS (default benches/results/tls-overhead/run1/): raw/*.json, log.txt,
# idle-cpu.txt. Knobs: ROUNDS=3 DURATION=8s WARMUP=2s CONCURRENCY="64 16" WORKLOADS="read insert"
# RECORDS=20000 ENTITY_SIZE=1024.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCHES=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/trestle/target}
RESULTS=${RESULTS:-$BENCHES/results/tls-overhead/run1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-"64 16"}
WORKLOADS=${WORKLOADS:-"read insert"}
RECORDS=${RECORDS:-20000}
ENTITY_SIZE=${ENTITY_SIZE:-1024}
TRESTLE=${TRESTLE:-$CARGO_TARGET_DIR/release/trestle}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/trestle-bench}

mkdir -p "$RESULTS/raw"
LOG="$RESULTS/log.txt"
: >"$LOG"
say() { echo "== $*" | tee -a "$LOG" >&2; }

WORK=$(mktemp -d /var/tmp/trestle-tls.XXXXXX)
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

# start NAME ARGS...: starts a dev cluster in $WORK/NAME; sets PID_<NAME> and READY_<NAME> (its JSON).
start() {
    local name=$1
    shift
    "$TRESTLE" dev --data "$WORK/$name" --rest-addr 127.0.0.1:0 --grpc-port 0 "$@" \
        >"$WORK/$name.stdout" 2>"$WORK/$name.stderr" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 600); do
        grep -q '^TRESTLE_READY ' "$WORK/$name.stdout" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.stderr" >&2; exit 1; }
        sleep 0.1
    done
    local ready
    ready=$(grep '^TRESTLE_READY ' "$WORK/$name.stdout" | head -1 | cut -d' ' -f2-)
    [[ -n "$ready" ]] || { echo "trestle dev ($name) did not become ready" >&2; exit 1; }
    printf -v "PID_$name" '%s' "$pid"
    printf -v "READY_$name" '%s' "$ready"
    say "$name: pid $pid, $ready"
}
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(",".join(v) if isinstance(v, list) else v)' "$1" "$2"; }
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

printf '[gateway]\nallow-anonymous = true\n' >"$WORK/anon.toml"
start tls --tls --config "$WORK/anon.toml"
CERT="$WORK/tls/tls/dev-cert.pem"
KEY="$WORK/tls/tls/dev-key.pem"
printf '[gateway]\nallow-anonymous = true\ntls-cert-file = "%s"\ntls-key-file = "%s"\n' "$CERT" "$KEY" \
    >"$WORK/rest-tls.toml"
start rest_tls --config "$WORK/rest-tls.toml"
start plain --config "$WORK/anon.toml"

REST_PLAIN="http://$(field "$READY_plain" rest)/devstoreaccount1"
REST_TLS="https://$(field "$READY_rest_tls" rest)/devstoreaccount1"
GRPC_PLAIN=$(field "$READY_plain" grpc)
GRPC_TLS=$(field "$READY_tls" grpc | sed 's#\([^,]*\)#https://\1#g')

# Nothing is measured before every range of every cluster is led by node 1 (the REST node), where
# trestle dev moves leaders shortly after start-up; then the clusters' idle CPU, which every measurement
# carries for the two clusters it does not use.
leaders_on_node1() { # NAME ADDR [--ca-file CERT]
    local name=$1 addr=$2
    shift 2
    "$TRESTLE" ctl --addr "$addr" --admin-token-file "$WORK/$name/cluster-token" "$@" status --json \
        2>/dev/null | python3 -c '
import json, sys
status = json.load(sys.stdin)
ranges = {r["range"] for r in status["replicas"]}
leaders = {r["range"]: r["leader"] for r in status["replicas"] if r["role"] == "leader"}
sys.exit(0 if ranges and leaders.keys() == ranges and set(leaders.values()) == {1} else 1)
'
}
all_led_by_node1() {
    leaders_on_node1 plain "http://${GRPC_PLAIN%%,*}" &&
        leaders_on_node1 rest_tls "http://$(field "$READY_rest_tls" grpc | cut -d, -f1)" &&
        leaders_on_node1 tls "${GRPC_TLS%%,*}" --ca-file "$CERT"
}
for _ in $(seq 1 100); do
    all_led_by_node1 && break
    sleep 0.3
done
all_led_by_node1 || say "warning: not every range is led by node 1; figures include forwarding hops"
{
    echo "idle CPU over 10 s (ticks of 10 ms): $(uptime)"
    declare -A before
    for n in plain rest_tls tls; do pid_var="PID_$n"; before[$n]=$(cpu_ticks "${!pid_var}"); done
    sleep 10
    for n in plain rest_tls tls; do
        pid_var="PID_$n"
        echo "$n: $(( $(cpu_ticks "${!pid_var}") - ${before[$n]} )) ticks = $(( ($(cpu_ticks "${!pid_var}") - ${before[$n]}) * 10 )) ms of CPU per 10 s"
    done
} | tee "$RESULTS/idle-cpu.txt" | tee -a "$LOG" >&2

COMMON=(--rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --records "$RECORDS"
    --entity-size "$ENTITY_SIZE" --ca-file "$CERT" --no-progress)
# pair NAME A-SPEC A-PID B-SPEC B-PID: one comparison for every workload and concurrency.
pair() {
    local name=$1 a=$2 apid=$3 b=$4 bpid=$5 w c
    for c in $CONCURRENCY; do
        for w in $WORKLOADS; do
            say "$name $w c=$c ($(uptime | sed 's/.*load/load/'))"
            echo "\$ trestle-bench run --target $a --compare $b --workload $w --concurrency $c ${COMMON[*]}" \
                "--server-pid $apid --compare-server-pid $bpid" >>"$LOG"
            "$BENCH" run --target "$a" --compare "$b" --workload "$w" --concurrency "$c" "${COMMON[@]}" \
                --server-pid "$apid" --compare-server-pid "$bpid" \
                --json "$RESULTS/raw/$name-$w-c$c.json" 2>&1 | tee -a "$LOG" >&2
        done
    done
}

say "trestle $(git -C "$BENCHES" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, $(uptime)"
pair rest-tls "rest-tls=rest:$REST_TLS" "$PID_rest_tls" "rest-plain=rest:$REST_PLAIN" "$PID_plain"
pair grpc-signing "signed=grpc:$GRPC_PLAIN" "$PID_plain" "unsigned=grpc-unsigned:$GRPC_PLAIN" "$PID_plain"
pair grpc-tls "grpc-tls=grpc:$GRPC_TLS" "$PID_tls" "grpc-plain=grpc:$GRPC_PLAIN" "$PID_plain"
all_led_by_node1 || say "warning: a range is no longer led by node 1 at the end of the run"
say "done: $RESULTS"
