#!/usr/bin/env bash
# Bounded-resources benchmark (issue 10, section 4): plan building at 5k/10k/20k phases, the
# 50,000-phase cap and an include fan-out, a phase printing half a million lines, one endless
# line, and `medic plan logs` of a 20,000-line phase.
#
#   bench/limits.sh                       # the release build of this checkout
#   MEDIC_BEFORE=/path/to/old/medic bench/limits.sh   # the same figures for another binary too
#   MEDIC=/path/to/medic bench/limits.sh  # skip the build, measure that binary
#
# Each row: wall time, peak RSS (bench/rusage.rs, built here with rustc), exit code, and for
# the output rows the state directory's size. Targets: 20k phases built in < 1 s; memory flat
# whatever the output size. Figures only; nothing is asserted (tests/limits.rs asserts bounds).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/medic-limits.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY MEDIC_MAX_PHASES
export NO_COLOR=1

[[ -n "${MEDIC:-}" ]] || build_medic
rustc -O -o "$TMP/rusage" "$ROOT/bench/rusage.rs"

mkdir -p "$TMP/plans" "$TMP/fan" "$TMP/work"
for n in 5000 10000 20000; do
    python3 "$ROOT/bench/bench.py" gen-procedure "flat$n" "$n" "$TMP/plans/flat$n.yaml"
done
cat >"$TMP/plans/seq.yaml" <<'EOF'
name: seq
phases:
  - id: big
    run: "seq 1 500000"
EOF
cat >"$TMP/plans/seq20k.yaml" <<'EOF'
name: seq20k
phases:
  - id: lines
    run: "seq 1 20000"
EOF
cat >"$TMP/plans/line.yaml" <<'EOF'
name: line
phases:
  - id: big
    run: "head -c 100000000 /dev/zero | tr '\\0' x"
EOF
for k in $(seq 0 25); do
    {
        echo "name: q$k"
        echo "phases:"
        if ((k < 25)); then
            printf '  - id: a\n    include: {procedure: q%d}\n  - id: b\n    include: {procedure: q%d}\n' $((k + 1)) $((k + 1))
        else
            printf '  - id: leaf\n    check: "true"\n'
        fi
    } >"$TMP/fan/q$k.yaml"
done

# row LABEL BINARY STATE ARGS...: one measured run.
row() {
    local label=$1 bin=$2 state=$3
    shift 3
    local rc=0
    (cd "$TMP/work" && "$TMP/rusage" "$TMP/report" "$bin" --state-dir "$state" "$@" >/dev/null 2>"$TMP/err") || rc=$?
    read -r wall user sys rss <"$TMP/report"
    local size=""
    [[ -d "$state" ]] && size=$(du -sh "$state" | cut -f1)
    printf '%-44s %9.2f s %8.1f MiB  exit %-3s %s\n' "$label" "$(echo "$wall / 1000000" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)" "$rc" "$size"
}

figures() {
    local name=$1 bin=$2 s="$TMP/state-$1"
    echo "== $name ($bin)"
    for n in 5000 10000 20000; do
        row "start flat$n --dry-run" "$bin" "$s-dry" --plans-dir "$TMP/plans" start "flat$n" --dry-run
    done
    row "start flat20000 (runs 20k checks)" "$bin" "$s-run" --plans-dir "$TMP/plans" start flat20000
    row "start seq (seq 1 500000)" "$bin" "$s-seq" --plans-dir "$TMP/plans" start seq
    row "plan logs (of seq 1 500000)" "$bin" "$s-seq" plan logs
    row "start seq20k" "$bin" "$s-20k" --plans-dir "$TMP/plans" start seq20k
    row "plan logs (20,000 lines)" "$bin" "$s-20k" plan logs
    row "start line (100 MB, no newline)" "$bin" "$s-line" --plans-dir "$TMP/plans" start line
}

# The include fan-out (2^26 phases) hangs an unbounded binary: it gets 20 s.
figures_fan() {
    local bin=$1 state=$2
    local rc=0
    (cd "$TMP/work" && timeout 20 "$TMP/rusage" "$TMP/report" "$bin" --state-dir "$state" \
        --plans-dir "$TMP/fan" procedures show q0 >/dev/null 2>&1) || rc=$?
    if ((rc == 124)); then
        printf '%-44s %s\n' "procedures show q0 (fan-out)" "still running after 20 s (killed)"
    else
        read -r wall user sys rss <"$TMP/report"
        printf '%-44s %9.2f s %8.1f MiB  exit %s\n' "procedures show q0 (fan-out)" \
            "$(echo "$wall / 1000000" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$rc"
    fi
}

run_all() {
    local name=$1 bin=$2
    figures "$name" "$bin"
    figures_fan "$bin" "$TMP/state-$name-fan"
}

if [[ -n "${MEDIC_BEFORE:-}" ]]; then
    run_all before "$MEDIC_BEFORE"
fi
run_all this "$MEDIC"
