#!/usr/bin/env bash
# medic report benchmark: the support bundle of a drill (5 nodes, every group) and of 50 node
# addresses of a local sshd (system group only), wall time and bundle size, against the same
# node commands collected with ansible (`-m raw` + `-m fetch`) in the same run.
#
#   bench/report.sh
#
# Steps:
#   1. cargo build --release (MEDIC_BIN=PATH uses that binary instead).
#   2. A drill (3 control-plane nodes, 2 workers) in a temp dir; `medic report -f` of
#      everything, $RUNS (1) times: wall time, bundle size, files; the drill is stopped after.
#   3. A local sshd on one port serving $N (50) loopback addresses 127.0.0.2 onwards (16 per
#      sshd process, as bench/ssh.sh and bench/status.sh do), generated keys, a known_hosts,
#      medic's inventory of N workers (ssh.persist: 0: every run connects, medic closes its
#      masters) and ansible's.
#   4. `medic report --only system` on the N nodes: wall time, bundle size, manifest items.
#   5. ansible-core (venv cached under $MEDIC_BENCH_CACHE, shared with the other benches), the
#      same commands (taken from `medic report --dry-run --only system -o json`, so the two
#      never drift apart), forks N, host keys checked strictly, ansible's usual
#      ControlMaster=auto / ControlPersist (a fresh ControlPath dir, masters closed after):
#        a. `ansible all -m raw`: every command into a file of a per-node directory (stdout,
#           stderr and exit code), tarred and gzipped on the node (ansible's best case: one
#           task, one file to fetch);
#        b. `ansible all -m fetch` of that tarball;
#        c. `ansible all -m raw` removing it from the node (medic leaves nothing behind);
#        d. one local tar.gz of what was fetched (one bundle, as medic writes).
#      Wall time of a-d together, and the final bundle's size.
#   6. The table and the target: >= 3x faster than ansible at N nodes.
#
# The nodes are this machine: the commands themselves cost the same for both tools; what
# differs is the fan-out, the transport and the bundling. Exit 0 when it ran (a missed target
# is a FAIL row); BENCH_STRICT=1 makes a miss exit 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
N=${BENCH_REPORT_NODES:-50}
RUNS=${BENCH_REPORT_RUNS:-1}
CACHE=${MEDIC_BENCH_CACHE:-$HOME/.cache/medic-bench}
PY=${PYTHON:-python3}
TMP=$(mktemp -d /tmp/medic-reportb.XXXXXX)
SSHD_PIDS=()
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY MEDIC_DRILL_DIR ANSIBLE_CONFIG
export NO_COLOR=1

close_masters() {
    local sock
    for sock in "$TMP"/cp-*/*; do
        [[ -S "$sock" ]] && ssh -O exit -S "$sock" bench-master >/dev/null 2>&1 || true
    done
}

cleanup() {
    local rc=$?
    set +e
    [[ -n "${MEDIC:-}" && -d "$TMP/drill" ]] && "$MEDIC" drill down --dir "$TMP/drill" >/dev/null 2>&1
    close_masters
    for pid in "${SSHD_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    rm -rf "$TMP" /tmp/medic-bench-collect-*
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
size_of() { stat -c %s "$1"; }
# best LABEL FILE CMD...: runs CMD $RUNS times (exit 0 expected), records the best wall time in
# ms and the size of FILE after the run.
declare -A BEST SIZE
best() {
    local label=$1 file=$2 t0 t1 ms rc min=""
    shift 2
    for ((r = 1; r <= RUNS; r++)); do
        rm -f "$file"
        t0=$(now_ms)
        set +e
        "$@" >"$TMP/last.out" 2>&1
        rc=$?
        set -e
        t1=$(now_ms)
        (( rc == 0 )) || { echo "$label failed (exit $rc):" >&2; tail -20 "$TMP/last.out" >&2; exit 1; }
        ms=$((t1 - t0))
        printf '  %-40s run %d: %7d ms, %9d bytes\n' "$label" "$r" "$ms" "$(size_of "$file")"
        [[ -z "$min" || $ms -lt $min ]] && min=$ms
    done
    BEST[$label]=$min
    SIZE[$label]=$(size_of "$file")
}

say "1. cargo build --release (MEDIC_BIN=PATH uses that binary instead)"
if [[ -n "${MEDIC_BIN:-}" ]]; then MEDIC=$MEDIC_BIN; else build_medic; fi
"$MEDIC" --version

say "2. medic report of a drill (5 nodes, every group)"
"$MEDIC" drill up --dir "$TMP/drill" --state-dir "$TMP/drill-state" >/dev/null
best "medic report, drill (5 nodes)" "$TMP/drill.tar.gz" env MEDIC_INVENTORY="$TMP/drill/cluster.yaml" \
    "$MEDIC" --state-dir "$TMP/drill-state" report -f "$TMP/drill.tar.gz"
grep -E '^wrote|warning' "$TMP/last.out" | head -5 | sed 's/^/  /'
"$MEDIC" drill down --dir "$TMP/drill" >/dev/null
rm -rf "$TMP/drill"

say "3. sshd on $N loopback addresses"
setup_loopback_nodes 30s
echo "  sshd: ${#SSHD_PIDS[@]} processes, port $PORT; load $(cut -d' ' -f1 /proc/loadavg) on $(nproc) CPUs"

say "4. medic report --only system on $N nodes"
best "medic report, $N nodes (system)" "$TMP/medic.tar.gz" \
    "$MEDIC" --state-dir "$TMP/state" --inventory "$TMP/cluster.yaml" report --only system -f "$TMP/medic.tar.gz"
grep -E '^wrote|warning' "$TMP/last.out" | head -5 | sed 's/^/  /'

say "5. ansible -m raw + -m fetch, the same commands on $N nodes"
if ! (ensure_ansible) >"$TMP/ansible-install.log" 2>&1; then
    echo "  ansible-core could not be installed (no network?); its row is left out:" >&2
    tail -3 "$TMP/ansible-install.log" >&2
    NO_ANSIBLE=1
fi
VENV="$CACHE/venv"
# The node commands, exactly as medic runs them on n0, as one raw script.
"$MEDIC" --inventory "$TMP/cluster.yaml" --state-dir "$TMP/state" -o json report --dry-run \
    --only system --node n0 >"$TMP/plan.json"
"$PY" - "$TMP/plan.json" >"$TMP/collect.sh" <<'EOF'
import json, os, sys
plan = json.load(open(sys.argv[1]))["collect"]
print('d=/tmp/medic-bench-collect-{{ inventory_hostname }}; rm -rf "$d"; mkdir -p "$d"')
for p in plan:
    f = os.path.basename(p["path"])
    print(f'( {p["command"]} ) >"$d/{f}" 2>"$d/{f}.stderr" </dev/null; echo $? >"$d/{f}.rc"')
print('tar czf "$d.tar.gz" -C "$d" . && rm -rf "$d"')
EOF
echo "  $(grep -c '\.rc"$' "$TMP/collect.sh") commands per node"
export ANSIBLE_HOME="$TMP/ansible-home" ANSIBLE_LOCAL_TEMP="$TMP/ansible-tmp" \
    ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_HOST_KEY_CHECKING=True \
    ANSIBLE_DEPRECATION_WARNINGS=0 ANSIBLE_PYTHON_INTERPRETER=auto_silent LC_ALL=C.UTF-8 \
    ANSIBLE_SSH_ARGS="-C -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$TMP/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
ansible_collect() {
    local out=$TMP/fetched run
    run=$(mktemp -d "$TMP/cp-XXXX")
    rm -rf "$out"
    local common=(all -i "$TMP/hosts.ini" -u "$USER_NAME" --private-key "$TMP/user_key" -e "ansible_port=$PORT" -f "$N")
    ANSIBLE_SSH_CONTROL_PATH_DIR=$run "$VENV/bin/ansible" "${common[@]}" -m raw -a "$(cat "$TMP/collect.sh")" >"$TMP/ansible-raw.out" &&
    ANSIBLE_SSH_CONTROL_PATH_DIR=$run "$VENV/bin/ansible" "${common[@]}" -m fetch \
        -a "src=/tmp/medic-bench-collect-{{ inventory_hostname }}.tar.gz dest=$out/ flat=no" >"$TMP/ansible-fetch.out" &&
    ANSIBLE_SSH_CONTROL_PATH_DIR=$run "$VENV/bin/ansible" "${common[@]}" -m raw \
        -a 'rm -f /tmp/medic-bench-collect-{{ inventory_hostname }}.tar.gz' >/dev/null &&
    tar czf "$TMP/ansible.tar.gz" -C "$out" .
    local rc=$?
    close_masters
    if ((rc != 0)); then
        # Why it failed: the last lines ansible printed (one per host that failed).
        tail -n 5 "$TMP"/ansible-*.out >&2 2>/dev/null || true
    fi
    return $rc
}
[[ -n "${NO_ANSIBLE:-}" ]] || best "ansible raw + fetch, $N nodes (system)" "$TMP/ansible.tar.gz" ansible_collect
[[ -n "${NO_ANSIBLE:-}" ]] || echo "  fetched: $(find "$TMP/fetched" -name '*.tar.gz' | wc -l) node tarballs"

say "6. results"
printf '  %-40s %9s %11s\n' "what (best of $RUNS)" "ms" "bytes"
for k in "medic report, drill (5 nodes)" "medic report, $N nodes (system)" "ansible raw + fetch, $N nodes (system)"; do
    printf '  %-40s %9s %11s\n' "$k" "${BEST[$k]:-n/a}" "${SIZE[$k]:-n/a}"
done
medic=${BEST["medic report, $N nodes (system)"]}
ansible=${BEST["ansible raw + fetch, $N nodes (system)"]:-0}
miss=0
row() { printf '  %-58s %s\n' "$1" "$2"; [[ $2 == PASS* ]] || miss=1; }
(( medic * 3 <= ansible )) && r=PASS || r=FAIL
(( ansible > 0 )) || r="FAIL (not measured)"
(( ansible > 0 )) && ratio=$(awk -v a="$ansible" -v m="$medic" 'BEGIN { printf "%.1fx", a / m }') || ratio=n/a
row "target: >= 3x faster than ansible at $N nodes ($medic vs $ansible ms, $ratio)" "$r"
[[ "${BENCH_STRICT:-0}" == 1 && $miss == 1 ]] && exit 1
exit 0
