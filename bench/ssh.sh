#!/usr/bin/env bash
# SSH fan-out benchmark: medic's `ssh` action on 50 nodes against ansible's raw and command
# modules on the same 50 addresses, through a real local sshd.
#
#   bench/ssh.sh
#   MEDIC_BEFORE=/path/to/old/medic bench/ssh.sh   # step 4b for that binary too, side by side
#
# Steps:
#   1. cargo build --release (reuses target/, or $CARGO_TARGET_DIR).
#   2. A local sshd on one free port serving $BENCH_SSH_NODES (50) loopback addresses,
#      127.0.0.2 onwards, with the test harness's settings (tests/common/sshd.rs): generated host
#      and user keys in a temp dir, key-only auth, MaxStartups 200:30:400, MaxSessions 200.
#      sshd listens on at most 16 addresses per process (MAX_LISTEN_SOCKS), so the addresses are
#      split over ceil(N/16) sshd processes sharing the port, config and keys. A known_hosts file
#      with every [address]:port; medic's inventory (role `node` on every node, connect_timeout
#      30s: 50 handshakes at once on a busy 2-CPU machine can take over 10 s) and ansible's.
#   3. Baselines with no tool around ssh: N plain `ssh host $CMD` in parallel (xargs -P N), the
#      cost of N handshakes, a floor for any cold run; then N masters opened with ssh -M and
#      N `ssh -S master host $CMD` in parallel over them (an ssh client process per command).
#   4. medic start on a procedure of two ssh phases on every node running $BENCH_SSH_CMD
#      ("true"), -o json, $BENCH_SSH_RUNS (3) times with a fresh state dir and `ssh.persist: 0`
#      (so every run connects, as before masters outlived medic): the first phase opens
#      the connections (cold), the second runs on the open masters (warm); times are the
#      phase_finished events' elapsed_secs, plus the process's wall time. After each run, no ssh
#      master of medic's may be left (medic closes its own). Then one diagnostic run that
#      captures the per-node results (duration_ms, and the node's clock when the command ran).
#   4b. Step by step, as operators run a procedure: `medic start ssh-steps --manual`, then
#      `medic plan execute --phase=/a`, `/b`, `/c` (one ssh phase on every node each), one medic
#      process per step, wall time of each; $BENCH_SSH_RUNS times, the masters closed between
#      (`medic ssh close`). The inventory keeps the default ssh.persist (60 s), so /b and /c
#      reuse the masters /a opened; XDG_RUNTIME_DIR=$TMP/run keeps their sockets in the temp
#      dir. With MEDIC_BEFORE, the same for that binary first.
#   5. ansible-core from PyPI in the venv under $MEDIC_BENCH_CACHE (~/.cache/medic-bench, shared
#      with bench/core.sh): `ansible all -m raw -a $CMD` and `-m command -a $CMD`, forks = N,
#      host keys checked strictly against the same known_hosts. Ansible keeps its default
#      ssh_args (-C -o ControlMaster=auto -o ControlPersist=60s), so the connections of one run
#      are multiplexed as usual; each cold run gets a fresh, empty ControlPath directory
#      (ANSIBLE_SSH_CONTROL_PATH_DIR), so it starts with no master, and its masters are closed
#      (ssh -O exit) right after. One warm run of each reuses the masters of the run before it.
#   6. The table, with the targets: medic cold >= 2x faster than ansible raw; warm < 200 ms;
#      step by step, the second and third `plan execute` <= 300 ms each (next to ansible -m raw
#      warm).
#   7. Cleanup: masters closed with ssh -O exit (anything left is ended by pid), sshd stopped by
#      pid, temp dir removed.
#
# Needs: cargo, python3 (with venv), openssh-client and -server (/usr/sbin/sshd), network to
# PyPI on the first run. Run as any user that may bind 127.0.0.x; /run/sshd is created if root.
# BENCH_SSH_KEX=ALGS sets sshd's KexAlgorithms (e.g. curve25519-sha256) for every client alike.
# Exit code: 0 when it ran (missed targets are FAIL rows), 1 when a step failed;
# BENCH_STRICT=1 makes a missed target exit 1 too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
HELP="$ROOT/bench/ssh_bench.py"
N=${BENCH_SSH_NODES:-50}
RUNS=${BENCH_SSH_RUNS:-3}
CMD=${BENCH_SSH_CMD:-true}
CACHE=${MEDIC_BENCH_CACHE:-$HOME/.cache/medic-bench}
PY=${PYTHON:-python3}
(( N >= 1 && N <= 250 )) || { echo "BENCH_SSH_NODES must be 1..250" >&2; exit 1; }

# Short path: ssh control sockets live under it.
TMP=$(mktemp -d /tmp/medic-sshb.XXXXXX)
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
SSHD_PIDS=()

say() { printf '\n== %s\n' "$*"; }

# Closes every ssh master whose command line names $TMP (medic's: -i $TMP/user_key; ansible's:
# the ControlPath directories under $TMP), first politely through its socket, then by pid.
close_masters() {
    local sock pid
    for sock in "$TMP"/cp-*/*; do
        [[ -S "$sock" ]] && ssh -O exit -S "$sock" bench-master >/dev/null 2>&1 || true
    done
    while read -r pid sock; do
        [[ -n "$sock" && -S "$sock" ]] && ssh -O exit -S "$sock" bench-master >/dev/null 2>&1 || true
    done < <("$PY" "$HELP" masters "$TMP")
    sleep 0.2
    while read -r pid sock; do
        echo "warning: ssh master $pid still running after ssh -O exit; ending it" >&2
        kill "$pid" 2>/dev/null || true
    done < <("$PY" "$HELP" masters "$TMP")
}

cleanup() {
    local rc=$?
    set +e
    close_masters
    for pid in "${SSHD_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    left=$("$PY" "$HELP" masters "$TMP")
    [[ -z "$left" ]] || echo "warning: ssh processes left: $left" >&2
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Keep the caller's environment from steering medic or ansible elsewhere.
unset MEDIC_STATE_DIR MEDIC_PLANS_DIR MEDIC_INVENTORY ANSIBLE_CONFIG ANSIBLE_SSH_ARGS
export NO_COLOR=1

say "1. cargo build --release"
build_medic
"$MEDIC" --version
if [[ -n "${MEDIC_BEFORE:-}" ]]; then
    [[ -x "$MEDIC_BEFORE" ]] || { echo "MEDIC_BEFORE=$MEDIC_BEFORE is not an executable" >&2; exit 1; }
    echo "before: $("$MEDIC_BEFORE" --version) ($MEDIC_BEFORE)"
fi

say "2. sshd on $N loopback addresses"
[[ -x /usr/sbin/sshd ]] || { echo "needs /usr/sbin/sshd (openssh-server)" >&2; exit 1; }
[[ -d /run/sshd ]] || mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$TMP/host_key" >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$TMP/user_key" >/dev/null
cp "$TMP/user_key.pub" "$TMP/authorized_keys"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
USER_NAME=$(id -un)
HOST_PUB=$(cut -d' ' -f1,2 "$TMP/host_key.pub")
: >"$TMP/known_hosts"
for ((i = 0; i < N; i++)); do
    echo "[127.0.0.$((i + 2))]:$PORT $HOST_PUB" >>"$TMP/known_hosts"
done
PER_SSHD=16
for ((g = 0; g * PER_SSHD < N; g++)); do
    conf="$TMP/sshd_config.$g"
    cat >"$conf" <<EOF
Port $PORT
HostKey $TMP/host_key
PidFile $TMP/sshd.$g.pid
AuthorizedKeysFile $TMP/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin yes
MaxStartups 200:30:400
MaxSessions 200
LogLevel ERROR
SetEnv SHLVL=1
EOF
    [[ -n "${BENCH_SSH_KEX:-}" ]] && echo "KexAlgorithms $BENCH_SSH_KEX" >>"$conf"
    for ((i = g * PER_SSHD; i < N && i < (g + 1) * PER_SSHD; i++)); do
        echo "ListenAddress 127.0.0.$((i + 2))" >>"$conf"
    done
    /usr/sbin/sshd -D -e -f "$conf" </dev/null >/dev/null 2>>"$TMP/sshd.log" &
    SSHD_PIDS+=($!)
done
for ((i = 0; i < N; i++)); do
    tries=0
    until "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.$((i + 2))', $PORT), 1)" 2>/dev/null; do
        (( ++tries < 250 )) || { echo "sshd did not start:" >&2; cat "$TMP/sshd.log" >&2; exit 1; }
        sleep 0.02
    done
done
echo "sshd: ${#SSHD_PIDS[@]} processes (pids ${SSHD_PIDS[*]}), port $PORT, 127.0.0.2..127.0.0.$((N + 1))," \
    "$(ssh -V 2>&1), kex ${BENCH_SSH_KEX:-OpenSSH default}"
mkdir -p "$TMP/work"
"$PY" "$HELP" gen "$TMP/work" "$N" "$PORT" "$USER_NAME" "$TMP/user_key" "$TMP/known_hosts" "$CMD"
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$TMP/known_hosts"
          -o IdentitiesOnly=yes -i "$TMP/user_key" -p "$PORT" -l "$USER_NAME")
ssh "${SSH_OPTS[@]}" 127.0.0.2 "$CMD" >/dev/null \
    || { echo "plain ssh to 127.0.0.2 failed:" >&2; cat "$TMP/sshd.log" >&2; exit 1; }

# Everything here is CPU-bound on a small machine (handshakes, sshd, remote shells all run
# locally), so other load skews the figures; say so.
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before measuring: $load on $(nproc) CPUs"
if "$PY" -c "import sys; sys.exit(0 if float('$load') > $(nproc) / 2 else 1)"; then
    echo "WARNING: the machine is busy (load $load on $(nproc) CPUs); the figures will be skewed" >&2
fi

say "3. baselines: $N plain ssh in parallel (cold), then over $N open ssh masters (warm), $RUNS runs each"
for ((r = 1; r <= RUNS; r++)); do
    "$PY" "$HELP" plain "$RESULTS" "plain ssh" "$N" "$TMP/plain.out" -- \
        bash -c 'seq 2 $(('"$N"' + 1)) | xargs -P '"$N"' -I{} ssh "$@" 127.0.0.{} '"$(printf %q "$CMD")" \
        bash "${SSH_OPTS[@]}"
done
mkdir -p "$TMP/cp-plain"
"$PY" "$HELP" plain "$RESULTS" "plain ssh masters" "$N" "$TMP/plain-m.out" -- \
    bash -c 'seq 2 $(('"$N"' + 1)) | xargs -P '"$N"' -I{} ssh "$@" -M -f -N -o ControlPersist=120 -S '"$TMP"'/cp-plain/{} 127.0.0.{}' \
    bash "${SSH_OPTS[@]}"
for ((r = 1; r <= RUNS; r++)); do
    "$PY" "$HELP" plain "$RESULTS" "plain ssh warm" "$N" "$TMP/plain-w.out" -- \
        bash -c 'seq 2 $(('"$N"' + 1)) | xargs -P '"$N"' -I{} ssh -S '"$TMP"'/cp-plain/{} 127.0.0.{} '"$(printf %q "$CMD")"
done
close_masters

say "4. medic start: two ssh phases on $N nodes, $RUNS runs, fresh state dir each"
cd "$TMP/work"
M=("$MEDIC" --plans-dir "$TMP/work/plans" --inventory "$TMP/work/cluster-p0.yaml")
for ((r = 1; r <= RUNS; r++)); do
    "$PY" "$HELP" medic "$RESULTS" medic "$N" "$TMP/medic.$r.json" -- \
        "${M[@]}" --state-dir "$TMP/state.$r" start ssh-bench -o json
    left=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=$("$PY" "$HELP" masters "$TMP")
        [[ -z "$left" ]] && break
        sleep 0.2
    done
    if [[ -n "$left" ]]; then
        echo "  WARNING: medic left $(wc -l <<<"$left") ssh master(s) running after it exited" >&2
        close_masters
    fi
done
echo "  diagnostic run (per-node results captured; not in the table):"
"$PY" "$HELP" medic "$RESULTS" "medic diag" "$N" "$TMP/diag.json" -- \
    "${M[@]}" --state-dir "$TMP/state.diag" start ssh-bench-diag -o json >/dev/null
"${M[@]}" --state-dir "$TMP/state.diag" plan -o json >"$TMP/diag-plan.json"
"$PY" "$HELP" diag "$TMP/diag.json" "$TMP/diag-plan.json"
close_masters

say "4b. step by step: plan execute --phase=/a, /b, /c, one medic run each, $RUNS times"
mkdir -m 700 -p "$TMP/run"
steps() {
    local who=$1 bin=$2 r state
    for ((r = 1; r <= RUNS; r++)); do
        state="$TMP/state.steps.$who.$r"
        S=(env XDG_RUNTIME_DIR="$TMP/run" "$bin" --plans-dir "$TMP/work/plans"
           --inventory "$TMP/work/cluster.yaml" --state-dir "$state")
        "${S[@]}" start ssh-steps --manual >/dev/null
        for p in a b c; do
            "$PY" "$HELP" plain "$RESULTS" "$who step $p" "$N" "$TMP/steps.$who.$p.out" -- \
                "${S[@]}" plan execute "--phase=/$p"
        done
        # Next repetition starts cold; the binary before has nothing to close.
        [[ $who == this ]] && "${S[@]}" ssh close >/dev/null
        close_masters
    done
}
if [[ -n "${MEDIC_BEFORE:-}" ]]; then
    steps before "$MEDIC_BEFORE"
fi
steps this "$MEDIC"

say "5. ansible on the same $N addresses, $RUNS cold runs each"
ensure_ansible
export ANSIBLE_HOME="$TMP/ansible-home" ANSIBLE_LOCAL_TEMP="$TMP/ansible-tmp" \
    ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0 \
    ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_FORKS="$N" \
    ANSIBLE_DEPRECATION_WARNINGS=0 LC_ALL=C.UTF-8
"$VENV/bin/ansible" --version | sed -n 1p
"$VENV/bin/ansible-config" dump --only-changed 2>/dev/null | sed 's/^/  /' || true
for module in raw command; do
    for ((r = 1; r <= RUNS; r++)); do
        export ANSIBLE_SSH_CONTROL_PATH_DIR="$TMP/cp-$module-$r"   # fresh and empty: cold
        "$PY" "$HELP" ansible "$RESULTS" "ansible $module" "$N" "$TMP/ansible-$module.out" -- \
            "$VENV/bin/ansible" all -i "$TMP/work/hosts.yml" -f "$N" -m "$module" -a "$CMD"
        if ((r == RUNS)); then
            # Same ControlPath dir right after: the masters of the run before are still up.
            "$PY" "$HELP" ansible "$RESULTS" "ansible $module warm" "$N" "$TMP/ansible-$module-warm.out" -- \
                "$VENV/bin/ansible" all -i "$TMP/work/hosts.yml" -f "$N" -m "$module" -a "$CMD"
        fi
        close_masters
    done
done
cd "$ROOT"

say "6. summary ($(nproc) CPUs, load $load before / $(cut -d' ' -f1 /proc/loadavg) after, $(uname -m), $N nodes, command: $CMD, medic $("$MEDIC" --version | awk '{print $2}'))"
"$PY" "$HELP" summary "$RESULTS" "$N" | tee "$TMP/summary.txt"
echo "ansible: default ssh_args (ControlMaster=auto, ControlPersist=60s); cold = fresh ControlPath dir per run, masters closed after each run"
status=0
if [[ "${BENCH_STRICT:-0}" == 1 ]] && grep -q '| FAIL |' "$TMP/summary.txt"; then
    status=1
fi
say "7. cleanup"
exit $status
