#!/usr/bin/env bash
# Drain benchmark: medic's `kube: {drain: ...}` phase against the stock `kubectl drain`, both on
# the drill's Kubernetes API emulator (`medic drill apiserver`), draining 100 pods off one node.
#
#   bench/drain.sh
#
# Steps:
#   1. cargo build --release (reuses target/, or $CARGO_TARGET_DIR).
#   2. A seed: nodes n1, n2, n3 (all Ready); on n1 60 pods of ReplicaSet `web` (5 more on n2,
#      65 in all) under the PodDisruptionBudget `web` with minAvailable 60, so the emulator's
#      disruptionsAllowed = healthy - minAvailable = 65 - 60 = 5 (checked before every timed run);
#      40 pods of four ReplicaSets without a budget (api, worker, queue, batch: 10 each); one
#      DaemonSet pod (kube-system/agent-n1), which both drains leave alone.
#   3. $BENCH_DRAIN_ROUNDS (3) rounds. Each round:
#      a. a fresh emulator from the seed; `medic start drain --set node=n1` on a procedure whose
#         only phase is `kube: {drain: {node: "{{ node }}", timeout: 10m}}`, fresh state dir,
#         wall clock from process start to exit. It must exit 0 and leave only agent-n1 on n1
#         (`kubectl get pods -A --field-selector spec.nodeName=n1`), with n1 cordoned.
#      b. another fresh emulator; `kubectl drain n1 --ignore-daemonsets --delete-emptydir-data
#         --timeout=10m` (kubectl's defaults otherwise: it retries a 429 after 5 s), timed and
#         checked the same way.
#      Each emulator is killed by pid right after its run.
#   4. The table (median and min), ratio medic/kubectl, and the target: medic's median at most
#      half of kubectl's.
#
# The emulator terminates a pod ~150 ms after its eviction and a ReplicaSet's replacement
# appears ~400 ms after that, so the budget lets at most 5 `web` pods go per ~0.55 s: the 60
# budgeted pods need at least 12 waves, whatever the client.
#
# Needs: cargo, kubectl. Exit code: 0 when it ran (a missed target is a FAIL row, not an exit
# code), 1 when a step failed. BENCH_STRICT=1 makes a missed target exit 1 too. Every emulator
# started here is killed by pid; the temp dir is removed. BENCH_KEEP=1 keeps the temp dir (logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
ROUNDS=${BENCH_DRAIN_ROUNDS:-3}
(( ROUNDS >= 1 )) || { echo "BENCH_DRAIN_ROUNDS must be >= 1" >&2; exit 1; }
for tool in cargo kubectl awk; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/medic-drainb.XXXXXX")
PIDS=()   # emulators started by this run

say() { printf '\n== %s\n' "$*"; }
log() { printf '%s\n' "$*"; }

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do
        [[ -n "$pid" ]] && stop_pid "$pid"
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Keep the caller's environment from steering medic or kubectl elsewhere.
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY KUBECONFIG
export NO_COLOR=1

say "1. cargo build --release"
build_medic

# ---------------------------------------------------------------------------------------------
# Seed (same shapes as tests/common/kube.rs).

node_yaml() {
    local n=$1
    printf -- '- kind: Node\n  metadata: {name: %s, labels: {kubernetes.io/hostname: %s}}\n  status:\n    conditions: [{type: Ready, status: "True"}]\n    nodeInfo: {kubeletVersion: v1.30.2}\n    addresses: [{type: InternalIP, address: 10.0.0.%s}]\n' \
        "$n" "$n" "${n#n}"
}

rs_yaml() {
    local rs=$1 replicas=$2
    printf -- '- kind: ReplicaSet\n  metadata: {name: %s, namespace: default}\n  spec: {replicas: %d, selector: {matchLabels: {app: %s}}}\n' \
        "$rs" "$replicas" "$rs"
}

rs_pod_yaml() {
    local name=$1 rs=$2 node=$3
    printf -- '- kind: Pod\n  metadata:\n    name: %s\n    namespace: default\n    labels: {app: %s}\n    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: %s, uid: rs-%s, controller: true}]\n  spec:\n    nodeName: %s\n    containers: [{name: c, image: nginx}]\n' \
        "$name" "$rs" "$rs" "$rs" "$node"
}

WEB_N1=60 WEB_N2=5 MIN_AVAILABLE=60
OTHER_RS=(api worker queue batch) OTHER_EACH=10
EXPECT_ALLOWED=$(( WEB_N1 + WEB_N2 - MIN_AVAILABLE ))
MOVED=$(( WEB_N1 + ${#OTHER_RS[@]} * OTHER_EACH ))

write_seed() {
    local n i rs
    for n in n1 n2 n3; do node_yaml "$n"; done
    rs_yaml web $(( WEB_N1 + WEB_N2 ))
    for (( i = 0; i < WEB_N1 + WEB_N2; i++ )); do
        rs_pod_yaml "web-$i" web "$([[ $i -lt $WEB_N1 ]] && echo n1 || echo n2)"
    done
    printf -- '- kind: PodDisruptionBudget\n  metadata: {name: web, namespace: default}\n  spec: {minAvailable: %d, selector: {matchLabels: {app: web}}}\n' "$MIN_AVAILABLE"
    for rs in "${OTHER_RS[@]}"; do
        rs_yaml "$rs" "$OTHER_EACH"
        for (( i = 0; i < OTHER_EACH; i++ )); do
            rs_pod_yaml "$rs-$i" "$rs" n1
        done
    done
    printf -- '- kind: DaemonSet\n  metadata: {name: agent, namespace: kube-system}\n  spec: {selector: {matchLabels: {app: agent}}}\n'
    printf -- '- kind: Pod\n  metadata:\n    name: agent-n1\n    namespace: kube-system\n    labels: {app: agent}\n    ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: ds-agent, controller: true}]\n  spec: {nodeName: n1, containers: [{name: c, image: agent}]}\n'
}

SEED="$TMP/seed.yaml"
write_seed >"$SEED"

PROC_DIR="$TMP/plans"
mkdir -p "$PROC_DIR"
cat >"$PROC_DIR/drain.yaml" <<'EOF'
name: drain
params:
  node: {required: true}
phases:
  - id: drain
    kube:
      drain: {node: "{{ node }}", timeout: 10m}
EOF

# ---------------------------------------------------------------------------------------------
# Emulator lifecycle.

API_PID="" API_DIR=""

# start_api DIR: a fresh emulator from the seed; sets API_PID, writes DIR/kubeconfig and
# DIR/cluster.yaml.
start_api() {
    local dir=$1 i line="" port
    mkdir -p "$dir"
    "$MEDIC" drill apiserver --port 0 --seed "$SEED" >"$dir/api.out" 2>"$dir/api.err" &
    API_PID=$!
    PIDS+=("$API_PID")
    API_DIR=$dir
    for i in $(seq 500); do
        line=$(head -n1 "$dir/api.out" 2>/dev/null || true)
        [[ "$line" == *"listening on http://127.0.0.1:"* ]] && break
        kill -0 "$API_PID" 2>/dev/null || { echo "emulator exited: $(cat "$dir/api.err")" >&2; exit 1; }
        sleep 0.02
    done
    port=${line##*:}
    [[ "$port" =~ ^[0-9]+$ ]] || { echo "no port in '$line'" >&2; exit 1; }
    cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: drill, cluster: {server: "http://127.0.0.1:$port"}}]
users: [{name: drill, user: {}}]
contexts: [{name: drill, context: {cluster: drill, user: drill}}]
current-context: drill
EOF
    cat >"$dir/cluster.yaml" <<EOF
name: drill
nodes:
  - {name: n1, roles: [worker]}
  - {name: n2, roles: [worker]}
  - {name: n3, roles: [worker]}
kubernetes: {kubeconfig: $dir/kubeconfig}
EOF
}

# Stops the current emulator and forgets its pid (so cleanup never signals a reused pid).
stop_api() {
    local keep=() pid
    [[ -n "$API_PID" ]] || return 0
    stop_pid "$API_PID"
    for pid in "${PIDS[@]}"; do
        [[ "$pid" == "$API_PID" ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
    API_PID=""
}

kc() { kubectl --kubeconfig "$API_DIR/kubeconfig" "$@"; }

# Before a timed run: the seed is in and the budget allows exactly EXPECT_ALLOWED disruptions.
check_start() {
    local n allowed
    n=$(kc get pods -A --field-selector spec.nodeName=n1 -o name | wc -l)
    [[ "$n" -eq $(( MOVED + 1 )) ]] || { echo "expected $(( MOVED + 1 )) pods on n1 before the drain, got $n" >&2; exit 1; }
    allowed=$(kc get pdb web -n default -o 'jsonpath={.status.disruptionsAllowed}')
    [[ "$allowed" == "$EXPECT_ALLOWED" ]] || { echo "budget web allows '$allowed' disruptions, expected $EXPECT_ALLOWED" >&2; exit 1; }
}

# After a timed run: only the DaemonSet pod on n1, n1 cordoned, every moved pod replaced elsewhere.
check_end() {
    local what=$1 left cordoned elsewhere
    left=$(kc get pods -A --field-selector spec.nodeName=n1 \
        -o 'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}')
    [[ "$left" == "kube-system/agent-n1" ]] || { echo "$what: pods left on n1: $(echo $left)" >&2; exit 1; }
    cordoned=$(kc get node n1 -o 'jsonpath={.spec.unschedulable}')
    [[ "$cordoned" == "true" ]] || { echo "$what: n1 not cordoned" >&2; exit 1; }
    # Replacements come ~400 ms after termination; count what is already back (informational).
    elsewhere=$(kc get pods -A -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c -E '^n[23]$' || true)
    echo "$elsewhere"
}

now() { printf '%s' "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

MEDIC_MS=() KUBECTL_MS=()
MEDIC_RETRIES=() KUBECTL_RETRIES=()

say "2-3. $ROUNDS rounds, fresh emulator per run: 1 node, $MOVED pods to move ($WEB_N1 under a budget allowing $EXPECT_ALLOWED), 1 DaemonSet pod"
log "kubectl: $(kubectl version --client 2>/dev/null | head -1)"
for (( r = 1; r <= ROUNDS; r++ )); do
    # a. medic
    dir="$TMP/r$r-medic"
    start_api "$dir"
    check_start
    mkdir -p "$dir/work"
    cp "$dir/cluster.yaml" "$dir/work/cluster.yaml"
    t0=$(now)
    set +e
    (cd "$dir/work" && MEDIC_STATE_DIR="$dir/state" MEDIC_PLANS_DIR="$PROC_DIR" \
        "$MEDIC" start drain --set node=n1 </dev/null >"$dir/medic.out" 2>"$dir/medic.err")
    rc=$?
    set -e
    ms=$(ms_since "$t0")
    if (( rc != 0 )); then
        echo "medic start drain exited $rc" >&2
        tail -n 30 "$dir/medic.out" "$dir/medic.err" >&2
        exit 1
    fi
    grep -q "drained n1: $MOVED pod(s) moved, 1 left alone" "$dir/medic.out" \
        || { echo "medic's summary lacks 'drained n1: $MOVED pod(s) moved, 1 left alone'" >&2; tail -n 20 "$dir/medic.out" >&2; exit 1; }
    back=$(check_end medic) || exit 1
    retries=$(grep -c "blocked by disruption budgets; retrying" "$dir/medic.out" || true)
    stop_api
    MEDIC_MS+=("$ms") MEDIC_RETRIES+=("$retries")
    log "round $r/$ROUNDS: medic start drain   $(printf '%9.1f' "$ms") ms  (retry rounds: $retries; pods back on n2/n3 at check: $back)"
    log "              medic waits: $(grep -o 'retrying in [0-9.]*s' "$dir/medic.out" | awk '{print $3}' | paste -sd' ')"

    # b. kubectl drain
    dir="$TMP/r$r-kubectl"
    start_api "$dir"
    check_start
    t0=$(now)
    set +e
    kubectl --kubeconfig "$dir/kubeconfig" drain n1 --ignore-daemonsets --delete-emptydir-data \
        --timeout=10m </dev/null >"$dir/kubectl.out" 2>"$dir/kubectl.err"
    rc=$?
    set -e
    ms=$(ms_since "$t0")
    if (( rc != 0 )); then
        echo "kubectl drain exited $rc" >&2
        tail -n 30 "$dir/kubectl.out" "$dir/kubectl.err" >&2
        exit 1
    fi
    back=$(check_end kubectl) || exit 1
    retries=$(cat "$dir/kubectl.out" "$dir/kubectl.err" | grep -c "will retry after 5s" || true)
    stop_api
    KUBECTL_MS+=("$ms") KUBECTL_RETRIES+=("$retries")
    log "round $r/$ROUNDS: kubectl drain       $(printf '%9.1f' "$ms") ms  (429s retried after 5s: $retries; pods back on n2/n3 at check: $back)"
done

# ---------------------------------------------------------------------------------------------
# Table.

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
minimum() { printf '%s\n' "$@" | sort -g | head -n1; }

m_med=$(median "${MEDIC_MS[@]}") m_min=$(minimum "${MEDIC_MS[@]}")
k_med=$(median "${KUBECTL_MS[@]}") k_min=$(minimum "${KUBECTL_MS[@]}")
read -r ratio_med ratio_min verdict < <(awk -v mm="$m_med" -v mn="$m_min" -v km="$k_med" -v kn="$k_min" \
    'BEGIN { printf "%.2f %.2f %s\n", mm/km, mn/kn, (mm <= km/2 ? "PASS" : "FAIL") }')

say "4. results ($ROUNDS rounds; $MOVED pods moved off n1, budget allows $EXPECT_ALLOWED at a time)"
printf '%-44s %12s %12s\n' "" median min
printf '%-44s %10.1fms %10.1fms\n' "medic start drain --set node=n1" "$m_med" "$m_min"
printf '%-44s %10.1fms %10.1fms\n' "kubectl drain n1 --ignore-daemonsets ..." "$k_med" "$k_min"
printf '%-44s %11sx %11sx\n' "ratio (medic / kubectl)" "$ratio_med" "$ratio_min"
printf '%-44s %12s\n' "target: medic <= 0.5 x kubectl (median)" "$verdict"
log "(medic retry rounds per run: ${MEDIC_RETRIES[*]}; kubectl 429s retried after 5s per run: ${KUBECTL_RETRIES[*]})"

if [[ "${BENCH_STRICT:-0}" == 1 && "$verdict" != PASS ]]; then
    exit 1
fi
