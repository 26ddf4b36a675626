#!/usr/bin/env bash
# Drill benchmark: how long the drill takes to start and stop, and how long medic's
# replace-control-plane-node takes end to end against the same steps typed as a hand-run runbook
# (kubectl, etcdctl, ssh) on an identical drill; plus a whole upgrade-kubernetes and its rollback.
#
#   bench/drill.sh
#
# Steps:
#   1. cargo build --release (reuses target/, or $CARGO_TARGET_DIR).
#   2. $BENCH_DRILL_ROUNDS (3) rounds. Each round:
#      a. `medic drill up` (3 control-plane nodes, 2 workers; timed), `drill break node-lost cp-2`,
#         `drill provision cp-2`, then the timed run: `medic start replace-control-plane-node`
#         (checks, etcd-remove-member phases, delete Node, reset + join, wait Ready, verify);
#         it must exit 0. `medic drill down` (timed).
#      b. a fresh drill, the same break and provision, then the timed runbook: kubectl get node,
#         etcdctl endpoint health, etcdctl member list (id of cp-2), etcdctl member remove,
#         kubectl delete node, ssh cp-2 'kubeadm reset --force && kubeadm join … --control-plane',
#         poll kubectl until cp-2 is Ready, etcdctl endpoint health of the three members.
#         `drill down`.
#   3. One drill: `medic start upgrade-kubernetes` 1.30.2 → 1.31.2 with cp-2 set to fail its
#      package upgrade (timed until it stops), then `medic plan rollback --phase=/` (timed);
#      then a fresh drill and a whole successful upgrade of the 5 nodes (timed).
#   4. A table: median and min of each, medic / runbook. There is no target in the issue; the
#      figures show what medic's checks, records and verification cost over the bare commands.
#
# Needs: cargo, bc, python3, openssh-server/client, etcd-server, etcd-client, kubectl (as .ci/test
# installs them, plus bc).
# Exit code 0 when it ran, 1 when a step failed. Every drill is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
ROUNDS=${BENCH_DRILL_ROUNDS:-3}
build_medic
WORK=$(mktemp -d /tmp/medic-bench-drill.XXXXXX)
export MEDIC_STATE_DIR="$WORK/state" MEDIC_DRILL_DIR="$WORK/drill"
export MEDIC_INVENTORY="$WORK/drill/cluster.yaml" NO_COLOR=1
cleanup() { "$MEDIC" drill down >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

now() { date +%s.%N; }
declare -A T
record() { T[$1]="${T[$1]:-} $2"; }
timed() { # name, command...
    local name=$1 start end
    shift
    start=$(now)
    "$@" >"$WORK/last.log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$WORK/last.log" >&2; exit 1; }
    end=$(now)
    record "$name" "$(echo "$end - $start" | bc -l)"
}

fresh_drill_with_lost_cp2() {
    "$MEDIC" drill down >/dev/null 2>&1 || true
    rm -rf "$MEDIC_STATE_DIR"
    timed "drill up (5 nodes)" "$MEDIC" drill up --control-planes 3 --workers 2
    "$MEDIC" drill break node-lost cp-2 >/dev/null
    # The reinstalled machine's new host key, as the operator reads it on its console.
    host_key=$("$MEDIC" drill provision cp-2 | sed -n 's/^new SSH host key: //p')
}

runbook() {
    local d=$MEDIC_DRILL_DIR kc=(kubectl --kubeconfig "$MEDIC_DRILL_DIR/kubeconfig")
    local eps port user id addr
    eps=$(grep -o 'http://[0-9.]*:[0-9]*' "$d/cluster.yaml" | paste -sd, -)
    port=$(awk '/^  port:/ {print $2}' "$d/cluster.yaml")
    user=$(awk '/^  user:/ {print $2}' "$d/cluster.yaml")
    addr=$(grep -o 'name: cp-2, address: [0-9.]*' "$d/cluster.yaml" | awk '{print $4}')
    "${kc[@]}" get node cp-2
    ETCDCTL_API=3 etcdctl --endpoints="$eps" endpoint health || true
    id=$(ETCDCTL_API=3 etcdctl --endpoints="$eps" member list -w json |
        python3 -c 'import json,sys; print(next(format(m["ID"],"x") for m in json.load(sys.stdin)["members"] if m.get("name")=="cp-2"))')
    ETCDCTL_API=3 etcdctl --endpoints="$eps" member remove "$id"
    "${kc[@]}" delete node cp-2
    # The runbook's operator trusts the reinstalled machine's new key by hand.
    ssh-keygen -R "[$addr]:$port" -f "$d/known_hosts" >/dev/null 2>&1
    ssh-keyscan -p "$port" "$addr" 2>/dev/null >>"$d/known_hosts"
    ssh -i "$d/ssh/user_key" -o UserKnownHostsFile="$d/known_hosts" -p "$port" "$user@$addr" \
        "kubeadm reset --force && $(cat "$d/join-command") --token $(cat "$d/token") --control-plane --certificate-key $(cat "$d/certificate-key")"
    until [[ $("${kc[@]}" get node cp-2 -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; do
        sleep 0.2
    done
    ETCDCTL_API=3 etcdctl --endpoints="$eps" endpoint health
}

for ((r = 1; r <= ROUNDS; r++)); do
    echo "round $r/$ROUNDS" >&2
    fresh_drill_with_lost_cp2
    timed "replace-control-plane-node: medic" "$MEDIC" start replace-control-plane-node --set node=cp-2 \
        --set "replacement_host_key=$host_key"
    timed "drill down" "$MEDIC" drill down
    fresh_drill_with_lost_cp2
    timed "replace-control-plane-node: runbook" runbook
    "$MEDIC" drill down >/dev/null
done

echo "upgrades" >&2
rm -rf "$MEDIC_STATE_DIR"
"$MEDIC" drill up --control-planes 3 --workers 2 >/dev/null 2>&1
"$MEDIC" drill break upgrade-fails cp-2 >/dev/null
upgrade=(start upgrade-kubernetes --set version=1.31.2 --set from_version=1.30.2 --set delete_emptydir_data=true)
start=$(now)
if "$MEDIC" "${upgrade[@]}" >"$WORK/last.log" 2>&1; then
    echo "the upgrade was meant to fail on cp-2" >&2
    exit 1
fi
record "upgrade failing on cp-2 (until it stops)" "$(echo "$(now) - $start" | bc -l)"
timed "rollback --phase=/ after it" "$MEDIC" plan rollback --phase=/
"$MEDIC" drill down >/dev/null
rm -rf "$MEDIC_STATE_DIR"
"$MEDIC" drill up --control-planes 3 --workers 2 >/dev/null 2>&1
timed "upgrade-kubernetes, 5 nodes" "$MEDIC" "${upgrade[@]}"
"$MEDIC" drill down >/dev/null

stats() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {printf "%8.2f s %8.2f s %3d", v[int((NR+1)/2)], v[1], NR}'; }
echo
printf '%-45s %10s %10s %3s\n' "what (wall clock)" "median" "min" "n"
for k in "drill up (5 nodes)" "drill down" "replace-control-plane-node: medic" \
         "replace-control-plane-node: runbook" "upgrade failing on cp-2 (until it stops)" \
         "rollback --phase=/ after it" "upgrade-kubernetes, 5 nodes"; do
    printf '%-45s %s\n' "$k" "$(stats "${T[$k]}")"
done
m=$(tr ' ' '\n' <<<"${T["replace-control-plane-node: medic"]}" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
b=$(tr ' ' '\n' <<<"${T["replace-control-plane-node: runbook"]}" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
printf '\nreplace-control-plane-node, medic / runbook (medians): %.2fx (%+.2f s)\n' \
    "$(echo "$m / $b" | bc -l)" "$(echo "$m - $b" | bc -l)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
