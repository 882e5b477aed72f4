#!/usr/bin/env bash
# Where a live gateway's time goes: runs the load bench's full-chain
# Tollgate (CHAIN=empty: the empty chain) against the fixed demo origin on loopback, drives it with wrk
# for DURATION seconds (default 5) at CONNS connections (default 1), and
# records it with perf (cpu-clock, call graphs). Guest functions are named
# (TOLLGATE_PERFMAP=1 makes wasmtime write /tmp/perf-PID.map).
#
# Usage: benches/profile.sh [CONNS]   then: perf report -i benches/results/perf.data
# Needs: perf (Debian: linux-perf), wrk; builds target/release/tollgate.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-1}
FULL=$([ "${CHAIN:-full}" = empty ] && echo False || echo True)
DURATION=${DURATION:-5}
cargo build --release -p tollgate
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
python3 - "$tmp" "$FULL" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("load", "benches/load.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
open(sys.argv[1] + "/full.toml", "w").write(m.tollgate_config(18181, 18180, sys.argv[2] == "True"))
PY
target/release/tollgate demo-origin --fixed --listen 127.0.0.1:18180 2>/dev/null &
TOLLGATE_PERFMAP=1 RUST_LOG=warn target/release/tollgate serve --config "$tmp/full.toml" 2>/dev/null &
gw=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18181) 2>/dev/null && break; sleep 0.1; done
threads=$([ "$CONNS" = 1 ] && echo 1 || echo 2)
wrk -t"$threads" -c"$CONNS" -d2s -H "x-api-key: bench-key" http://127.0.0.1:18181/v1/items >/dev/null
mkdir -p benches/results
perf record -e cpu-clock -F 4000 -g -p "$gw" -o benches/results/perf.data -- sleep "$((DURATION + 1))" &
rec=$!
sleep 0.5
wrk -t"$threads" -c"$CONNS" -d"${DURATION}s" -H "x-api-key: bench-key" http://127.0.0.1:18181/v1/items
wait "$rec"
perf report -i benches/results/perf.data --no-children --sort dso --stdio 2>/dev/null | grep '%' | head -12
