#!/usr/bin/env python3
"""Helper for bench/etcd.sh: real 3-member etcd clusters, medic's /etcd/remove against a bare
`etcdctl member remove`, and the summary table.

  etcd_bench.py run TMP MEDIC ROUNDS [BEFORE]
                                         the benchmark; prints progress and the table (with
                                         BEFORE, another medic binary, timed in the same rounds)
  etcd_bench.py leftovers TMP            pids of processes whose command line names TMP or
                                         whose working directory is under it

Clusters follow tests/common/etcd.rs: Debian's etcd 3.4 (etcd-server), three members on free
loopback ports (plain http), fresh data dirs under TMP, heartbeat 100 ms, election timeout
1000 ms, log level warn. Every member's pid goes to TMP/pids as soon as it is started, so the
shell's trap can SIGKILL it by pid if this helper dies. Teardown is SIGKILL, then a wait until
every port of the cluster binds again, then the data dir is removed.
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

SETTLE_SECS = float(os.environ.get("BENCH_ETCD_SETTLE", "6"))
VERSION_RUNS = int(os.environ.get("BENCH_ETCD_VERSION_RUNS", "10"))
TARGET_MS = 100.0
# Issue 18's target: medic's median at most this many times etcdctl's.
TARGET_RATIO = 1.2


def log(msg):
    print(msg, flush=True)


def free_port(taken):
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in taken:
            taken.add(port)
            return port


def port_free(port):
    # SO_REUSEADDR as Rust's TcpListener::bind (tests/common/etcd.rs): connections of the killed
    # member left in TIME_WAIT do not keep a new listener off the port.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def etcdctl(endpoints, *args, timeout=30):
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        ["etcdctl", f"--endpoints={','.join(endpoints)}", "--command-timeout=5s", *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


class Cluster:
    def __init__(self, tmp, label):
        self.dir = os.path.join(tmp, label)
        os.makedirs(self.dir)
        taken = set()
        self.members = []
        for i in range(3):
            self.members.append({
                "name": f"m{i + 1}",
                "peer": free_port(taken),
                "client": free_port(taken),
                "proc": None,
            })
        self.pids_file = os.path.join(tmp, "pids")

    def client_url(self, m):
        return f"http://127.0.0.1:{m['client']}"

    def peer_url(self, m):
        return f"http://127.0.0.1:{m['peer']}"

    def live_endpoints(self):
        return [self.client_url(m) for m in self.members if m["proc"] is not None]

    def start(self):
        initial = ",".join(f"{m['name']}={self.peer_url(m)}" for m in self.members)
        for m in self.members:
            logf = open(os.path.join(self.dir, f"{m['name']}.log"), "wb")
            m["proc"] = subprocess.Popen(
                ["etcd", "--name", m["name"],
                 "--data-dir", os.path.join(self.dir, f"{m['name']}.data"),
                 "--listen-peer-urls", self.peer_url(m),
                 "--initial-advertise-peer-urls", self.peer_url(m),
                 "--listen-client-urls", self.client_url(m),
                 "--advertise-client-urls", self.client_url(m),
                 "--initial-cluster", initial,
                 "--initial-cluster-state", "new",
                 "--initial-cluster-token", "medic-bench",
                 "--heartbeat-interval", "100",
                 "--election-timeout", "1000",
                 "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf)
            logf.close()
            with open(self.pids_file, "a") as f:
                f.write(f"{m['proc'].pid}\n")
        started = time.monotonic()
        while True:
            out = etcdctl(self.live_endpoints(), "endpoint", "health")
            if out.returncode == 0:
                break
            if time.monotonic() - started > 30:
                raise SystemExit(f"etcd did not become healthy:\n{out.stderr}\n" +
                                 open(os.path.join(self.dir, "m1.log")).read()[-2000:])
            time.sleep(0.1)
        # etcd refuses membership changes for a while after start ("unhealthy cluster").
        time.sleep(SETTLE_SECS)

    def kill(self, m):
        p = m["proc"]
        if p is not None:
            try:
                p.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            m["proc"] = None
        started = time.monotonic()
        while not (port_free(m["client"]) and port_free(m["peer"])):
            if time.monotonic() - started > 10:
                raise SystemExit(f"ports of {m['name']} stayed busy")
            time.sleep(0.02)

    def wait_survivor_leader(self):
        """After m3 is killed: wait until one of the live members reports itself leader. If m3
        led, the survivors still follow it until their election timeout (1-2 s); a membership
        change sent meanwhile is forwarded to the dead leader and lost (the client times out).
        A member that failed long ago, the case medic's procedure is for, is past that."""
        started = time.monotonic()
        while True:
            out = etcdctl(self.live_endpoints(), "endpoint", "status", "-w", "json")
            if out.returncode == 0:
                for e in json.loads(out.stdout):
                    st = e["Status"]
                    # proto3 JSON leaves out zero fields: no "leader" while there is none.
                    if st.get("leader", 0) and st["leader"] == st["header"].get("member_id"):
                        return
            if time.monotonic() - started > 30:
                raise SystemExit(f"no leader among the survivors: {out.stdout}{out.stderr}")
            time.sleep(0.1)

    def member_ids(self):
        out = etcdctl(self.live_endpoints(), "member", "list", "-w", "json")
        if out.returncode != 0:
            raise SystemExit(f"etcdctl member list: {out.stderr}")
        return {m.get("name", ""): m["ID"] for m in json.loads(out.stdout)["members"]}

    def inventory(self):
        lines = ["name: etcd-bench", "nodes:"]
        for m in self.members:
            lines.append(f"  - {{name: {m['name']}, address: 127.0.0.1, roles: [control-plane, etcd]}}")
        eps = ", ".join(self.client_url(m) for m in self.members)
        lines.append(f"etcd:\n  endpoints: [{eps}]")
        return "\n".join(lines) + "\n"

    def teardown(self):
        for m in self.members:
            self.kill(m)
        subprocess.run(["rm", "-rf", self.dir], check=True)


def timed(argv, **kw):
    t0 = time.perf_counter()
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    return (time.perf_counter() - t0) * 1000.0, out


def medic_round(tmp, medic, r):
    c = Cluster(tmp, f"medic-{r}")
    try:
        c.start()
        c.kill(c.members[2])
        c.wait_survivor_leader()
        work = os.path.join(c.dir, "work")
        os.makedirs(work)
        with open(os.path.join(work, "cluster.yaml"), "w") as f:
            f.write(c.inventory())
        env = dict(os.environ, MEDIC_STATE_DIR=os.path.join(work, "state"), NO_COLOR="1")
        for k in ("MEDIC_PLANS_DIR", "MEDIC_INVENTORY"):
            env.pop(k, None)

        def medic_run(*args):
            return timed([medic, *args], cwd=work, env=env)

        steps = [("start", "etcd-remove-member", "--set", "node=m3", "--manual")]
        steps += [("plan", "execute", f"--phase={p}")
                  for p in ("/checks/health", "/checks/quorum", "/snapshot", "/etcd/find")]
        for s in steps:
            ms, out = medic_run(*s)
            if out.returncode != 0:
                raise SystemExit(f"medic {' '.join(s)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        # /etcd/remove is `confirm: true`: with no terminal, binaries that ask need --yes
        # (older ones have no such flag and ask nothing).
        confirm = ["--yes"] if "--yes" in medic_run("plan", "execute", "--help")[1].stdout else []
        ms, out = medic_run("plan", "execute", "--phase=/etcd/remove", *confirm)
        if out.returncode != 0:
            raise SystemExit(f"medic plan execute --phase=/etcd/remove exited {out.returncode}:\n"
                             f"{out.stdout}\n{out.stderr}")
        names = sorted(c.member_ids().keys())
        if names != ["m1", "m2"]:
            raise SystemExit(f"after medic's /etcd/remove the members are {names}")
        retried = "unhealthy cluster" in out.stdout + out.stderr
        # The phase's own duration as medic reports it ("completed in 25ms" / "in 1.2s").
        phase_ms = None
        found = re.search(r"/etcd/remove completed in ([0-9.]+)(ms|s)\b", out.stdout)
        if found:
            phase_ms = float(found.group(1)) * (1.0 if found.group(2) == "ms" else 1000.0)
        return ms, phase_ms, retried
    finally:
        c.teardown()


def etcdctl_round(tmp, r):
    c = Cluster(tmp, f"etcdctl-{r}")
    try:
        c.start()
        c.kill(c.members[2])
        c.wait_survivor_leader()
        ids = c.member_ids()
        hex_id = format(ids["m3"], "x")
        argv = ["etcdctl", f"--endpoints={','.join(c.live_endpoints())}",
                "member", "remove", hex_id]
        ms, out = timed(argv, env=dict(os.environ, ETCDCTL_API="3"))
        if out.returncode != 0:
            raise SystemExit(f"etcdctl member remove exited {out.returncode}: {out.stderr}")
        names = sorted(c.member_ids().keys())
        if names != ["m1", "m2"]:
            raise SystemExit(f"after etcdctl member remove the members are {names}")
        return ms
    finally:
        c.teardown()


def version_times(argv, env=None):
    times = []
    for _ in range(VERSION_RUNS):
        ms, out = timed(argv, env=env)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {out.returncode}: {out.stderr}")
        times.append(ms)
    return times


def run(tmp, medic, rounds, before=None):
    """Each round times medic (and BEFORE, when given, on its own fresh cluster) and etcdctl,
    so every side sees the same load."""
    medic_ms, phase_ms, ctl_ms, retries = [], [], [], 0
    before_ms, before_phase_ms = [], []
    load_before = open("/proc/loadavg").read().split()[:3]
    for r in range(1, rounds + 1):
        sides = [("before: ", before, before_ms, before_phase_ms)] if before else []
        sides.append(("", medic, medic_ms, phase_ms))
        for label, binary, times, phases in sides:
            ms, pms, retried = medic_round(tmp, binary, f"{label[:6]}{r}")
            times.append(ms)
            if pms is not None:
                phases.append(pms)
            retries += retried
            log(f"round {r}/{rounds}: {label}medic plan execute --phase=/etcd/remove {ms:8.1f} ms"
                + (f"  (phase itself, as medic reports it: {pms:.0f} ms)" if pms is not None else "")
                + ("  (retried: unhealthy cluster)" if retried else ""))
        ms = etcdctl_round(tmp, r)
        ctl_ms.append(ms)
        log(f"round {r}/{rounds}: etcdctl member remove                 {ms:8.1f} ms")
    load_after = open("/proc/loadavg").read().split()[:3]

    mv = version_times([medic, "--version"])
    bv = version_times([before, "--version"]) if before else []
    ev = version_times(["etcdctl", "version"], env=dict(os.environ, ETCDCTL_API="3"))

    med = statistics.median
    m_med, m_min = med(medic_ms), min(medic_ms)
    e_med, e_min = med(ctl_ms), min(ctl_ms)
    over_med, over_min = m_med - e_med, m_min - e_min
    ok = over_med < TARGET_MS
    ratio_ok = m_med / e_med <= TARGET_RATIO
    w = 44
    log("")
    log(f"{'':{w}} {'median':>10} {'min':>10}")
    if before:
        log(f"{'before: medic plan execute --phase=/etcd/remove':{w}} "
            f"{med(before_ms):8.1f}ms {min(before_ms):8.1f}ms")
        if before_phase_ms:
            log(f"{'before:   of which the phase (medic reports)':{w}} "
                f"{med(before_phase_ms):8.1f}ms {min(before_phase_ms):8.1f}ms")
        log(f"{'before: ratio (medic / etcdctl)':{w}} {med(before_ms) / e_med:9.2f}x "
            f"{min(before_ms) / e_min:9.2f}x")
        log(f"{f'before: medic --version ({VERSION_RUNS} runs)':{w}} {med(bv):8.1f}ms {min(bv):8.1f}ms")
    log(f"{'medic plan execute --phase=/etcd/remove':{w}} {m_med:8.1f}ms {m_min:8.1f}ms")
    if phase_ms:
        log(f"{'  of which the phase (medic reports)':{w}} {med(phase_ms):8.1f}ms {min(phase_ms):8.1f}ms")
    log(f"{'etcdctl member remove':{w}} {e_med:8.1f}ms {e_min:8.1f}ms")
    log(f"{'overhead (medic - etcdctl)':{w}} {over_med:8.1f}ms {over_min:8.1f}ms")
    log(f"{'ratio (medic / etcdctl)':{w}} {m_med / e_med:9.2f}x {m_min / e_min:9.2f}x")
    log(f"{f'medic --version ({VERSION_RUNS} runs)':{w}} {med(mv):8.1f}ms {min(mv):8.1f}ms")
    log(f"{f'etcdctl version ({VERSION_RUNS} runs)':{w}} {med(ev):8.1f}ms {min(ev):8.1f}ms")
    log(f"{'target: overhead < 100 ms (median)':{w}} {'PASS' if ok else 'FAIL':>10}")
    log(f"{f'target: ratio <= {TARGET_RATIO}x (median, issue 18)':{w}} "
        f"{'PASS' if ratio_ok else 'FAIL':>10}")
    log(f"({rounds} rounds; medic runs that retried on 'unhealthy cluster': {retries}; "
        f"load average {' '.join(load_before)} before, {' '.join(load_after)} after, "
        f"{os.cpu_count()} CPUs)")
    with open(os.path.join(tmp, "verdict"), "w") as f:
        f.write("PASS\n" if ok and ratio_ok else "FAIL\n")


def leftovers(tmp):
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if (tmp in cmd or cwd.startswith(tmp)) and "etcd_bench.py" not in cmd:
            print(pid)


def on_term(signum, frame):
    # An exception, so subprocess.run kills the child it waits for and the clusters' finally
    # blocks tear them down.
    raise SystemExit(f"stopped by signal {signum}")


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "run":
        signal.signal(signal.SIGTERM, on_term)
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) == 6 else None)
    elif len(sys.argv) == 3 and sys.argv[1] == "leftovers":
        leftovers(sys.argv[2])
    else:
        sys.exit(__doc__)
