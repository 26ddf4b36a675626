#!/usr/bin/env bash
# etcd benchmark: medic's `plan execute --phase=/etcd/remove` (the built-in etcd-remove-member
# procedure) against a bare `etcdctl member remove`, on real 3-member etcd 3.4 clusters.
#
#   bench/etcd.sh
#   MEDIC_BEFORE=/path/to/old/medic bench/etcd.sh   # the same medic figures for another binary,
#                                                   # in the same rounds, side by side
#
# Steps:
#   1. cargo build --release (reuses target/, or $CARGO_TARGET_DIR).
#   2. $BENCH_ETCD_ROUNDS (5) rounds. Each round:
#      a. a fresh 3-member cluster (tests/common/etcd.rs's settings, but heartbeat 100 ms and
#         election timeout 1000 ms) from empty data dirs, plain http on free loopback ports;
#         wait until `etcdctl endpoint health` passes, then $BENCH_ETCD_SETTLE (6) s more (etcd
#         refuses membership changes right after start: "unhealthy cluster"); SIGKILL m3, wait
#         until its ports bind again and until one of m1, m2 reports itself leader (if m3 led,
#         a change sent before the survivors' election is forwarded to the dead leader and lost).
#         medic start etcd-remove-member --set node=m3 --manual, then plan execute
#         /checks/health, /checks/quorum, /snapshot (empty path: skipped) and /etcd/find;
#         then the timed run: `medic plan execute --phase=/etcd/remove` (with --yes where the
#         binary has it: the phase is confirm: true and there is no terminal), wall clock from
#         process start to exit (and the phase's own time, as medic prints it).
#         It must exit 0 and m3 must be gone.
#      b. another fresh cluster, same waits, m3 killed; m3's id from `etcdctl member list -w
#         json` (untimed), then the timed run: `etcdctl member remove ID` with --endpoints of
#         the two live members. It must exit 0 and m3 must be gone.
#      Each cluster is torn down with SIGKILL, its ports waited free, its data dir removed.
#   3. $BENCH_ETCD_VERSION_RUNS (10) runs each of `medic --version` and `etcdctl version`: the
#      cost of starting each process.
#      With $MEDIC_BEFORE, each round also runs step a for that binary (its own fresh cluster),
#      before medic's own.
#   4. The table (median and min), overhead = medic - etcdctl, ratio, and the targets: medic's
#      median overhead under 100 ms on top of etcdctl, and medic's median at most 1.2x
#      etcdctl's (issue 18). The load average before and after is
#      printed too: other work on the machine (a compile) inflates both sides, medic's more.
#
# Needs: cargo, python3, etcd and etcdctl 3.4 (Debian: etcd-server, etcd-client).
# Exit code: 0 when it ran (a missed target is a FAIL row, not an exit code), 1 when a step
# failed. BENCH_STRICT=1 makes a missed target exit 1 too. No etcd process is left behind.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
HELP="$ROOT/bench/etcd_bench.py"
ROUNDS=${BENCH_ETCD_ROUNDS:-5}
PY=${PYTHON:-python3}
(( ROUNDS >= 1 )) || { echo "BENCH_ETCD_ROUNDS must be >= 1" >&2; exit 1; }
for tool in etcd etcdctl "$PY" cargo; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/medic-etcdb.XXXXXX")
: >"$TMP/pids"
HELPER_PID=

say() { printf '\n== %s\n' "$*"; }

# Stop the helper (SIGTERM: it kills the command it waits for and tears its cluster down), then
# SIGKILL every etcd this run started (by the pids the helper recorded, then anything else whose
# command line names $TMP or that runs in it), wait for them to go, remove the temp dir.
cleanup() {
    local rc=$? pid i
    set +e
    if [[ -n "$HELPER_PID" ]]; then
        kill -TERM "$HELPER_PID" 2>/dev/null
        wait "$HELPER_PID" 2>/dev/null
    fi
    # Only while the pid still names $TMP (its --data-dir): a pid may be reused once reaped.
    while read -r pid; do
        [[ -n "$pid" ]] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$TMP/" \
            && kill -KILL "$pid" 2>/dev/null
    done <"$TMP/pids"
    for pid in $("$PY" "$HELP" leftovers "$TMP"); do
        echo "warning: process $pid still running; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    done
    for i in $(seq 100); do
        [[ -z "$("$PY" "$HELP" leftovers "$TMP")" ]] && break
        sleep 0.05
    done
    [[ -n "$("$PY" "$HELP" leftovers "$TMP")" ]] && echo "warning: processes under $TMP survived SIGKILL" >&2
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Keep the caller's environment from steering medic elsewhere.
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY
export NO_COLOR=1

say "1. cargo build --release"
build_medic

say "2-4. $ROUNDS rounds on fresh 3-member etcd clusters ($(etcd --version | head -1))"
# In the background and waited for, so a signal to this script runs the trap at once.
if [[ -n "${MEDIC_BEFORE:-}" ]]; then
    echo "before: $MEDIC_BEFORE ($("$MEDIC_BEFORE" --version))"
    "$PY" "$HELP" run "$TMP" "$MEDIC" "$ROUNDS" "$MEDIC_BEFORE" &
else
    "$PY" "$HELP" run "$TMP" "$MEDIC" "$ROUNDS" &
fi
HELPER_PID=$!
wait "$HELPER_PID"
HELPER_PID=

if [[ "${BENCH_STRICT:-0}" == 1 && "$(cat "$TMP/verdict")" != PASS ]]; then
    exit 1
fi
