#!/usr/bin/env bash
# Soak: the tests that send signals, kill processes, wait on timeouts or run processes concurrently (pytest -m soak),
# SOAK_ROUNDS times in a row (default 5), then the whole suite once (SOAK_FULL=0 skips it), while two busy loops
# keep both cores of a 2-core machine saturated. Prints one summary line per round; exits non-zero if any test
# failed. `make soak` runs it; `make test` does not. Logs: $SOAK_LOGS (default: a new temporary directory).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
ROUNDS=${SOAK_ROUNDS:-5}
FULL=${SOAK_FULL:-1}
LOGS=${SOAK_LOGS:-$(mktemp -d -t mlp-sweeps-soak.XXXXXX)}
export MPLBACKEND=Agg
mkdir -p "$LOGS"

# The load: each busy loop in its own process group (job control), stopped by its group id on any exit.
busy=()
stop_load() {
    for pgid in "${busy[@]}"; do
        kill -- "-$pgid" 2>/dev/null
    done
}
trap stop_load EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
set -m
for _ in 1 2; do
    "$PYTHON" -c 'while True: pass' </dev/null >/dev/null 2>&1 &
    busy+=("$!")
done
set +m
echo "soak: busy loops in process groups ${busy[*]}; logs in $LOGS"

failed=0
# run_round NAME PYTEST-ARGS...: one pytest run under the load, and its summary line
run_round() {
    local name=$1 log="$LOGS/$1.log" start=$SECONDS rc
    shift
    "$PYTHON" -m pytest -p no:cacheprovider -q -rfE "$@" >"$log" 2>&1
    rc=$?
    local last passed failed_n errors load
    last=$(grep -E '(passed|failed|errors?|deselected|no tests ran).* in [0-9.]+s' "$log" | tail -n 1)
    passed=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || true)
    failed_n=$(grep -oE '[0-9]+ failed' <<<"$last" | grep -oE '[0-9]+' || true)
    errors=$(grep -oE '[0-9]+ errors?' <<<"$last" | grep -oE '[0-9]+' || true)
    load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
    printf 'soak %s: %s passed, %s failed, %s errors in %d s (load %s, pytest exit %d)\n' "$name" "${passed:-0}" \
        "${failed_n:-0}" "${errors:-0}" "$((SECONDS - start))" "$load" "$rc"
    if [ "$rc" -ne 0 ]; then
        failed=1
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
        echo "    log: $log"
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    run_round "round-$round-of-$ROUNDS" -m soak
done
if [ "$FULL" != 0 ]; then
    run_round full-suite
fi
if [ "$failed" -ne 0 ]; then
    echo "soak: FAILED"
    exit 1
fi
echo "soak: all rounds passed"
