#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: stable where
# wall-clock timings on this machine are not (see benches/instructions.rs).
# Compare two builds by running this on each and comparing the numbers.
#
# Usage: benches/instructions.sh [CASE...]   (N=200 requests per case)
# Needs: valgrind (installed from Debian's packages if missing). Builds the
# bench binary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
if ! command -v valgrind >/dev/null; then
    echo "installing valgrind from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(filter/headers filter/url_guard filter/auth filter/rate_limit
    filter/four_components chain/empty chain/four_components)
bin=$(cargo bench -p tollgate --bench instructions --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-28s %14s\n' case 'instr/request'
for c in "${CASES[@]}"; do
    valgrind --tool=callgrind --toggle-collect='*measured*' --smc-check=all-non-file \
        --callgrind-out-file="$out/cg" "$bin" "$c" "$N" >/dev/null 2>"$out/log"
    total=$(grep -o 'Collected : [0-9]*' "$out/log" | grep -o '[0-9]*$')
    printf '%-28s %14s\n' "$c" "$((total / N))"
done
