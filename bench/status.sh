#!/usr/bin/env bash
# medic status benchmark: the health probes on a drill (5 nodes) and the node probes on 50
# node addresses of a local sshd, against the SSH handshake floor and ansible's raw module.
#
#   bench/status.sh
#
# Steps:
#   1. cargo build --release.
#   2. A drill (3 control-plane nodes, 2 workers) in a temp dir; `medic status` $RUNS (3) times,
#      wall time each; the drill is stopped after.
#   3. A local sshd on one port serving $N (50) loopback addresses 127.0.0.2 onwards (16 per
#      sshd process, as bench/ssh.sh does), generated keys, a known_hosts, an inventory of N
#      workers. On a plain host the node probes mostly fail (no kubelet): the timing is what
#      counts, every probe runs either way.
#   4. The SSH handshake floor: N plain `ssh host true` in parallel (xargs -P N).
#   5. `medic status --only node/` on the N nodes, $RUNS times, each with new connections
#      (`ssh.persist: 0`, as the floor and ansible: no master kept from the run before).
#   6. ansible-core (venv cached under $MEDIC_BENCH_CACHE, shared with the other benches):
#      `ansible all -m raw` with the node-health facts script, then with the clock probe's
#      `date` (one task per probe group), forks N, host keys checked strictly.
#   7. The table and the targets: 50-node status within 2x the floor, >= 3x faster than ansible.
#
# Exit 0 when it ran (a missed target is a FAIL row); BENCH_STRICT=1 makes a miss exit 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
N=${BENCH_STATUS_NODES:-50}
RUNS=${BENCH_STATUS_RUNS:-3}
CACHE=${MEDIC_BENCH_CACHE:-$HOME/.cache/medic-bench}
PY=${PYTHON:-python3}
TMP=$(mktemp -d /tmp/medic-statusb.XXXXXX)
SSHD_PIDS=()
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY MEDIC_DRILL_DIR ANSIBLE_CONFIG
export NO_COLOR=1

cleanup() {
    local rc=$?
    set +e
    [[ -n "${MEDIC:-}" && -d "$TMP/drill" ]] && "$MEDIC" drill down --dir "$TMP/drill" >/dev/null 2>&1
    for pid in "${SSHD_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# best LABEL CMD...: runs CMD $RUNS times (exit codes 0 and 1 count: 1 is a finding) and
# prints and records the best wall time in ms.
declare -A BEST
best() {
    local label=$1 t0 t1 ms rc min=""
    shift
    for ((r = 1; r <= RUNS; r++)); do
        t0=$(now_ms)
        set +e
        "$@" >"$TMP/last.out" 2>&1
        rc=$?
        set -e
        t1=$(now_ms)
        (( rc <= 1 )) || { echo "$label failed (exit $rc):" >&2; tail -20 "$TMP/last.out" >&2; exit 1; }
        ms=$((t1 - t0))
        printf '  %-34s run %d: %6d ms (exit %d)\n' "$label" "$r" "$ms" "$rc"
        [[ -z "$min" || $ms -lt $min ]] && min=$ms
    done
    BEST[$label]=$min
}

say "1. cargo build --release (MEDIC_BIN=PATH uses that binary instead)"
if [[ -n "${MEDIC_BIN:-}" ]]; then MEDIC=$MEDIC_BIN; else build_medic; fi
"$MEDIC" --version

say "2. medic status on a drill (5 nodes)"
"$MEDIC" drill up --dir "$TMP/drill" --state-dir "$TMP/drill-state" >/dev/null
best "medic status, drill (5 nodes)" env MEDIC_INVENTORY="$TMP/drill/cluster.yaml" \
    "$MEDIC" --state-dir "$TMP/drill-state" status
head -1 "$TMP/last.out"
"$MEDIC" drill down --dir "$TMP/drill" >/dev/null
rm -rf "$TMP/drill"

say "3. sshd on $N loopback addresses"
setup_loopback_nodes 10s
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$TMP/known_hosts"
          -o IdentitiesOnly=yes -i "$TMP/user_key" -p "$PORT" -l "$USER_NAME")
echo "  sshd: ${#SSHD_PIDS[@]} processes, port $PORT; load $(cut -d' ' -f1 /proc/loadavg) on $(nproc) CPUs"

say "4. the floor: $N plain ssh in parallel"
best "plain ssh x$N (floor)" bash -c 'seq 2 $(('"$N"' + 1)) | xargs -P '"$N"' -I{} ssh "$@" 127.0.0.{} true' bash "${SSH_OPTS[@]}"

say "5. medic status --only node/ on $N nodes"
best "medic status, $N nodes" "$MEDIC" --state-dir "$TMP/state" --inventory "$TMP/cluster.yaml" status --only node/
head -1 "$TMP/last.out"

say "6. ansible -m raw, one task per probe group"
if ! (ensure_ansible) >"$TMP/ansible-install.log" 2>&1; then
    echo "  ansible-core could not be installed (no network?); its row is left out:" >&2
    tail -3 "$TMP/ansible-install.log" >&2
    NO_ANSIBLE=1
fi
VENV="$CACHE/venv"
FACTS=$(sed -n '/^      run: |$/,/^    capture:/p' "$ROOT/plans/node-health.yaml" | sed '1d;$d' | sed 's/^        //')
[[ $FACTS == *'printf '* && $FACTS != *'capture:'* ]] || { echo "could not read the facts script of plans/node-health.yaml" >&2; exit 1; }
export ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=$TMP/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
ansible_run() {
    ANSIBLE_SSH_CONTROL_PATH_DIR=$(mktemp -d "$TMP/cp.XXXX") "$VENV/bin/ansible" all -i "$TMP/hosts.ini" \
        -u "$USER_NAME" --private-key "$TMP/user_key" -e "ansible_port=$PORT" -f "$N" -m raw -a "$FACTS" >/dev/null &&
    ANSIBLE_SSH_CONTROL_PATH_DIR=$(mktemp -d "$TMP/cp.XXXX") "$VENV/bin/ansible" all -i "$TMP/hosts.ini" \
        -u "$USER_NAME" --private-key "$TMP/user_key" -e "ansible_port=$PORT" -f "$N" -m raw -a 'date +%s%3N' >/dev/null
}
[[ -n "${NO_ANSIBLE:-}" ]] || best "ansible raw, $N nodes" ansible_run

say "7. results"
floor=${BEST["plain ssh x$N (floor)"]}
medic=${BEST["medic status, $N nodes"]}
ansible=${BEST["ansible raw, $N nodes"]:-0}
printf '  %-34s %8s\n' "what (best of $RUNS)" "ms"
for k in "medic status, drill (5 nodes)" "plain ssh x$N (floor)" "medic status, $N nodes" "ansible raw, $N nodes"; do
    printf '  %-34s %8s\n' "$k" "${BEST[$k]:-n/a}"
done
miss=0
row() { printf '  %-58s %s\n' "$1" "$2"; [[ $2 == PASS* ]] || miss=1; }
(( medic <= 2 * floor )) && r=PASS || r=FAIL
row "target: $N-node status within 2x the floor ($medic vs $((2 * floor)) ms)" "$r"
(( medic * 3 <= ansible )) && r=PASS || r=FAIL
(( ansible > 0 )) || r="FAIL (not measured)"
row "target: >= 3x faster than ansible raw ($medic vs $ansible ms)" "$r"
[[ "${BENCH_STRICT:-0}" == 1 && $miss == 1 ]] && exit 1
exit 0
