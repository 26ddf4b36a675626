#!/usr/bin/env bash
# Core benchmark: medic's per-phase cost against ansible-playbook's per-task cost, and the cost
# of `medic plan` on a large finished operation.
#
#   bench/core.sh
#   MEDIC_BEFORE=/path/to/old/medic bench/core.sh   # the same medic figures for another binary,
#                                                   # side by side, from the same run
#
# Steps:
#   1. cargo build --release (reuses target/, or $CARGO_TARGET_DIR).
#   2. medic start on a generated procedure of $BENCH_PHASES (10000) phases, each `check: "true"`,
#      with a fresh state dir: wall time, peak RSS, ms/phase. A 1-phase run gives the startup cost.
#   3. ansible-core from PyPI in a venv under $MEDIC_BENCH_CACHE (~/.cache/medic-bench; reused),
#      ansible-playbook on $BENCH_TASKS (1000) tasks of $BENCH_ANSIBLE_TASK (debug: msg=x, an
#      in-controller action like medic's in-process check; or `command`, which runs `true` through
#      a module), localhost, connection: local, gather_facts: false. Ratio of per-step times.
#   4. medic plan, plan -o json and plan --short on the finished 10000-phase operation,
#      $BENCH_PLAN_RUNS (7) runs each (after one untimed open): best/median wall time and peak RSS.
#   5. A summary table with issue 18's targets: <= 0.25 ms per durable phase and >= 100x
#      ansible-playbook per task; plan <= 40 ms median and <= 30 MiB; state dir <= 10 MB.
#   6. bench/etcd_state.sh: a 1,000-phase plan on sled and on a local 3-member etcd (ms/phase,
#      medic plan latency) and `etcdctl put` in the same run (issue 17; needs etcd-server).
#   Steps 2 and 4 run for $MEDIC_BEFORE too when it is set (its own state dir), so before and
#   after come from one run on the same machine.
#
# Wall time, CPU time and peak RSS of each run come from bench/rusage.rs, a tiny helper built
# here with rustc (no GNU time needed); see bench/bench.py for the fallback.
# Needs: cargo, python3 (with venv), network to PyPI on the first run. Temp files are removed.
# Exit code: 0 when it ran (targets missed are shown as FAIL in the table, not as an exit code),
# 1 when a step failed. BENCH_STRICT=1 makes a missed target exit 1 too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
BENCH="$ROOT/bench/bench.py"
PHASES=${BENCH_PHASES:-10000}
TASKS=${BENCH_TASKS:-1000}
PLAN_RUNS=${BENCH_PLAN_RUNS:-7}
TASK_KIND=${BENCH_ANSIBLE_TASK:-debug}
CACHE=${MEDIC_BENCH_CACHE:-$HOME/.cache/medic-bench}
PY=${PYTHON:-python3}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/medic-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

say() { printf '\n== %s\n' "$*"; }

# Keep the caller's environment from steering medic elsewhere.
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY
export NO_COLOR=1

say "1. cargo build --release"
build_medic
"$MEDIC" --version
# The timing helper (see bench/rusage.rs); without rustc, bench.py measures by itself.
if rustc -O -o "$TMP/rusage" "$ROOT/bench/rusage.rs" 2>"$TMP/rustc.err"; then
    export RUSAGE_BIN="$TMP/rusage"
else
    cat "$TMP/rustc.err" >&2
    echo "warning: could not build bench/rusage.rs; peak RSS will include python's own" >&2
    unset RUSAGE_BIN
fi

say "2. medic start on $PHASES phases of check: \"true\""
mkdir -p "$TMP/plans" "$TMP/work"
NAME=bench-core
"$PY" "$BENCH" gen-procedure "$NAME" "$PHASES" "$TMP/plans/$NAME.yaml"
"$PY" "$BENCH" gen-procedure "$NAME-one" 1 "$TMP/plans/$NAME-one.yaml"
echo "procedure: $(wc -c <"$TMP/plans/$NAME.yaml") bytes"
cd "$TMP/work"   # medic's default ./cluster.yaml and ./state would be looked up here

# engine_run PREFIX BIN: the 1-phase and N-phase runs of BIN, its state dir's size.
engine_run() {
    local p=$1 bin=$2 dir="$TMP/state-${1%: }"
    "$PY" "$BENCH" measure "$RESULTS" "${p}medic start 1" 1 "$TMP/start1.out" -- \
        "$bin" --plans-dir "$TMP/plans" --state-dir "$dir-1" start "$NAME-one"
    "$PY" "$BENCH" measure "$RESULTS" "${p}medic start N" 1 "$TMP/start.out" -- \
        "$bin" --plans-dir "$TMP/plans" --state-dir "$dir" start "$NAME"
    tail -n 1 "$TMP/start.out"
    "$PY" "$BENCH" dir-size "$RESULTS" "${p}state dir" "$dir"
    local done_count
    done_count=$("$bin" --state-dir "$dir" plan -o json | "$PY" -c \
        'import json,sys; print(json.load(sys.stdin)["progress"]["completed"])')
    echo "${p}phases completed: $done_count of $PHASES"
    [[ "$done_count" == "$PHASES" ]] || { echo "not every phase completed" >&2; exit 1; }
}
if [[ -n "${MEDIC_BEFORE:-}" ]]; then
    echo "before: $MEDIC_BEFORE ($("$MEDIC_BEFORE" --version))"
    engine_run "before: " "$MEDIC_BEFORE"
fi
engine_run "" "$MEDIC"

say "3. ansible-playbook on $TASKS $TASK_KIND tasks"
ensure_ansible
export ANSIBLE_HOME="$TMP/ansible-home" ANSIBLE_LOCAL_TEMP="$TMP/ansible-tmp" \
    ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0 \
    ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 \
    ANSIBLE_PYTHON_INTERPRETER="$VENV/bin/python" LC_ALL=C.UTF-8
"$VENV/bin/ansible-playbook" --version | sed -n 1p
"$PY" "$BENCH" gen-playbook "$TASKS" "$TMP/playbook.yaml" "$TASK_KIND"
"$PY" "$BENCH" gen-playbook 1 "$TMP/playbook1.yaml" "$TASK_KIND"
"$PY" "$BENCH" measure "$RESULTS" "ansible-playbook 1" 1 "$TMP/ansible1.out" -- \
    "$VENV/bin/ansible-playbook" -i localhost, "$TMP/playbook1.yaml"
"$PY" "$BENCH" measure "$RESULTS" "ansible-playbook N" 1 "$TMP/ansible.out" -- \
    "$VENV/bin/ansible-playbook" -i localhost, "$TMP/playbook.yaml"
grep -E '^localhost +:' "$TMP/ansible.out" || true
grep -qE "^localhost +: ok=$TASKS " "$TMP/ansible.out" \
    || { echo "ansible did not report ok=$TASKS" >&2; exit 1; }

say "4. medic plan on the finished $PHASES-phase operation, $PLAN_RUNS runs each"
# plan_runs PREFIX BIN: each view of the plan, timed (the first open after a run replays
# sled's log and is left out: an operator looks at a plan many times per run).
plan_runs() {
    local p=$1 bin=$2 dir="$TMP/state-${1%: }"
    "$bin" --state-dir "$dir" plan >/dev/null
    "$PY" "$BENCH" measure "$RESULTS" "${p}medic plan" "$PLAN_RUNS" "$TMP/plan.out" -- \
        "$bin" --state-dir "$dir" plan
    "$PY" "$BENCH" measure "$RESULTS" "${p}medic plan -o json" "$PLAN_RUNS" "$TMP/plan.json" -- \
        "$bin" --state-dir "$dir" plan -o json
    "$PY" "$BENCH" measure "$RESULTS" "${p}medic plan --short" "$PLAN_RUNS" "$TMP/plan.short" -- \
        "$bin" --state-dir "$dir" plan --short
}
if [[ -n "${MEDIC_BEFORE:-}" ]]; then
    plan_runs "before: " "$MEDIC_BEFORE"
fi
plan_runs "" "$MEDIC"

say "5. summary ($(nproc) CPUs, $(uname -m), medic $("$MEDIC" --version | awk '{print $2}'))"
status=0
"$PY" "$BENCH" summary "$RESULTS" "$PHASES" "$TASKS" "$TASK_KIND" | tee "$TMP/summary.txt"
if [[ "${BENCH_STRICT:-0}" == 1 ]] && grep -q '| FAIL |' "$TMP/summary.txt"; then
    status=1
fi

say "6. the etcd state backend (issue 17): sled vs a local 3-member etcd, and etcdctl put"
"$ROOT/bench/etcd_state.sh" "$MEDIC" || status=1
exit $status
