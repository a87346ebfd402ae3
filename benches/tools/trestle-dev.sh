# Sourced by the comparison scripts: waits for a `trestle dev` they started and for its steady state.
#
#   wait_trestle_ready PID STDOUT STDERR   sets TRESTLE_REST, TRESTLE_GRPC (comma-separated), FIRST_GRPC
#   wait_leaders_on_node1 TOKEN_FILE        returns 1 if not every range is led by node 1 within 30 s
#
# Needs $TRESTLE (the binary) and python3.

wait_trestle_ready() {
    local pid=$1 stdout=$2 stderr=$3 ready
    for _ in $(seq 1 600); do
        grep -q '^TRESTLE_READY ' "$stdout" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$stderr" >&2; return 1; }
        sleep 0.1
    done
    ready=$(grep '^TRESTLE_READY ' "$stdout" | head -1 | cut -d' ' -f2-)
    [[ -n "$ready" ]] || { echo "trestle dev did not become ready" >&2; return 1; }
    TRESTLE_REST="http://$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rest"])' "$ready")/devstoreaccount1"
    TRESTLE_GRPC=$(python3 -c 'import json,sys; print(",".join(json.loads(sys.argv[1])["grpc"]))' "$ready")
    FIRST_GRPC=${TRESTLE_GRPC%%,*}
}

# Nothing is measured before every range has a leader and trestle dev has moved each to node 1 (the node
# that serves REST; the meta range holds the locks), as it does by itself shortly after it starts.
leaders_on_node1() {
    "$TRESTLE" ctl --addr "$FIRST_GRPC" --admin-token-file "$1" status --json 2>/dev/null | python3 -c '
import json, sys
status = json.load(sys.stdin)
ranges = {r["range"] for r in status["replicas"]}
leaders = {r["range"]: r["leader"] for r in status["replicas"] if r["role"] == "leader"}
sys.exit(0 if ranges and leaders.keys() == ranges and set(leaders.values()) == {1} else 1)
'
}

wait_leaders_on_node1() {
    for _ in $(seq 1 100); do
        leaders_on_node1 "$1" && return 0
        sleep 0.3
    done
    leaders_on_node1 "$1"
}
