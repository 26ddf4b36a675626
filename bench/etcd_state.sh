#!/usr/bin/env bash
# The etcd state backend against sled (issue 17): the same 1,000-phase plan on sled and on a
# local 3-member etcd (`--state etcd://...`), ms per phase on each, `medic plan` latency on each,
# and etcd's own `etcdctl put` in the same run for the floor (a commit waits for a quorum fsync).
#
#   bench/etcd_state.sh [MEDIC]     # run by bench/core.sh with its release binary
#
# Steps:
#   1. Start 3 etcd members (Debian etcd-server) on free loopback ports, data in a temp dir.
#   2. medic start on a 1-phase and a $BENCH_ETCD_PHASES (1000) phase procedure of `check:
#      "true"`, on sled and on etcd: ms/phase = (N-phase wall - 1-phase wall) / (N - 1).
#   3. medic plan on each finished operation, $BENCH_PLAN_RUNS (7) runs: median wall time.
#   4. $BENCH_PUTS (200) `etcdctl put` and as many `etcdctl get` (same process start-up, no
#      commit): put - get is etcd's own cost of one durable write; the ratio medic/put.
# Target (issue 17): etcd <= 5 ms per phase on loopback. Prints figures; exit 1 only on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MEDIC=${1:-}
if [[ -z "$MEDIC" ]]; then
    source "$ROOT/bench/lib.sh"
    build_medic
fi
command -v etcd >/dev/null || { echo "etcd not installed (apt-get install -y etcd-server etcd-client)" >&2; exit 1; }
PHASES=${BENCH_ETCD_PHASES:-1000}
PLAN_RUNS=${BENCH_PLAN_RUNS:-7}
PUTS=${BENCH_PUTS:-200}
PY=${PYTHON:-python3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/medic-etcd-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
unset MEDIC_STATE MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY
export NO_COLOR=1 ETCDCTL_API=3

echo "== etcd state 1. three etcd members"
read -r -a PORTS <<<"$("$PY" -c 'import socket
s=[socket.socket() for _ in range(6)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')"
CLUSTER="m0=http://127.0.0.1:${PORTS[3]},m1=http://127.0.0.1:${PORTS[4]},m2=http://127.0.0.1:${PORTS[5]}"
ENDPOINTS=""
for i in 0 1 2; do
    c=${PORTS[$i]} p=${PORTS[$((i + 3))]}
    etcd --name "m$i" --data-dir "$TMP/m$i" --listen-client-urls "http://127.0.0.1:$c" \
        --advertise-client-urls "http://127.0.0.1:$c" --listen-peer-urls "http://127.0.0.1:$p" \
        --initial-advertise-peer-urls "http://127.0.0.1:$p" --initial-cluster "$CLUSTER" \
        --initial-cluster-state new --log-level warn >"$TMP/m$i.log" 2>&1 &
    PIDS+=($!)
    disown
    ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:$c"
done
for _ in $(seq 100); do
    etcdctl --endpoints="$ENDPOINTS" endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
etcdctl --endpoints="$ENDPOINTS" endpoint health
etcd --version | sed -n 1p

echo "== etcd state 2-4. $PHASES phases on sled and on etcd; medic plan; etcdctl put"
mkdir -p "$TMP/plans" "$TMP/work"
"$PY" "$ROOT/bench/bench.py" gen-procedure bench-etcd "$PHASES" "$TMP/plans/bench-etcd.yaml"
"$PY" "$ROOT/bench/bench.py" gen-procedure bench-etcd-one 1 "$TMP/plans/bench-etcd-one.yaml"
cd "$TMP/work"
"$PY" - "$MEDIC" "$TMP" "$ENDPOINTS" "$PHASES" "$PLAN_RUNS" "$PUTS" <<'PYEOF'
import os, statistics, subprocess, sys, time
medic, tmp, endpoints, phases, plan_runs, puts = sys.argv[1:7]
phases, plan_runs, puts = int(phases), int(plan_runs), int(puts)

def wall(cmd, env=None):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr.decode()[-500:]}")
    return time.perf_counter() - t

base = [medic, "--plans-dir", f"{tmp}/plans"]
rows = {}
for store in ["sled", "etcd"]:
    env = dict(os.environ)
    if store == "etcd":
        env["MEDIC_STATE"] = f"etcd://{endpoints}/bench"
    else:
        env["MEDIC_STATE_DIR"] = f"{tmp}/state"
    one = wall(base + ["start", "bench-etcd-one"], env)
    many = wall(base + ["start", "bench-etcd"], env)
    per_phase = (many - one) / (phases - 1) * 1000
    ops = subprocess.run([medic, "operations", "-o", "json"], env=env, capture_output=True).stdout
    import json
    big = [o["id"] for o in json.loads(ops)["operations"] if o["procedure"] == "bench-etcd"][0]
    wall([medic, "plan", "--operation", big], env)
    plans = [wall([medic, "plan", "--operation", big], env) * 1000 for _ in range(plan_runs)]
    rows[store] = (one * 1000, many, per_phase, statistics.median(plans))

ctl = ["etcdctl", f"--endpoints={endpoints}"]
put = [wall(ctl + ["put", f"/bench-put/{i}", "x"]) for i in range(puts)]
get = [wall(ctl + ["get", f"/bench-put/{i}"]) for i in range(puts)]
put_ms = statistics.median(put) * 1000
get_ms = statistics.median(get) * 1000
commit_ms = max(put_ms - get_ms, 0.001)

print(f"| store | 1-phase run | {phases}-phase run | ms/phase | medic plan (median of {plan_runs}) |")
print("|---|---|---|---|---|")
for store, (one, many, per, plan) in rows.items():
    print(f"| {store} | {one:.0f} ms | {many:.2f} s | {per:.2f} | {plan:.0f} ms |")
print(f"etcdctl put: {put_ms:.1f} ms median per invocation, etcdctl get: {get_ms:.1f} ms "
      f"(process start-up); one durable etcd write ~ {commit_ms:.2f} ms")
etcd_per = rows["etcd"][2]
print(f"etcd ms/phase / etcd write: {etcd_per / commit_ms:.1f}x "
      f"(one transaction per phase: its start with the previous phase's end); etcd/sled per phase: {etcd_per / rows['sled'][2]:.1f}x")
print(f"target etcd <= 5 ms/phase: {'PASS' if etcd_per <= 5 else 'FAIL'} ({etcd_per:.2f} ms)")
PYEOF
