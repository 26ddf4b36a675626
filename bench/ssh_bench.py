#!/usr/bin/env python3
"""Helpers for bench/ssh.sh: generate inputs, time runs, find leftover ssh masters, summarize.

  ssh_bench.py gen DIR N PORT USER KEY KNOWN_HOSTS CMD
        DIR/cluster.yaml (medic inventory, nodes n1..nN at 127.0.0.2.., role `node`; no
        ssh.persist key, so a binary older than it reads it too), DIR/cluster-p0.yaml (the
        same with `persist: 0`: every run connects), DIR/hosts.yml (the same hosts for
        ansible), DIR/plans/ssh-bench.yaml (two ssh phases running CMD on every node),
        DIR/plans/ssh-steps.yaml (three: a, b, c, for `plan execute --phase=` one at a time)
        and DIR/plans/ssh-bench-diag.yaml (the same two phases with per-node results captured
        and printed by a third, local phase)
  ssh_bench.py medic RESULTS LABEL N OUT -- CMD...
        run one `medic start ... -o json`, check that both phases completed on N nodes, append
        the phase times (from phase_finished.elapsed_secs) and the process wall time to RESULTS
  ssh_bench.py ansible RESULTS LABEL N OUT -- CMD...
        run one ansible ad-hoc command, check that all N hosts answered, append its wall time
  ssh_bench.py plain RESULTS LABEL N OUT -- CMD...
        run any command (the plain-ssh baseline), append its wall time
  ssh_bench.py diag OUT PLAN_JSON
        per-node durations and remote timestamps of the diagnostic run, as text
  ssh_bench.py masters DIR...
        pid and control socket of every ssh master process whose command line names one of DIR
  ssh_bench.py summary RESULTS N
        the table, with the targets

Every run records wall time, the CPU time of the process and the children it reaped (ssh
clients before they fork into the background are among them), and the whole machine's busy CPU
time over the run (from /proc/stat), which shows when a run is CPU-bound.
"""
import json
import os
import statistics
import subprocess
import sys
import time

PROCEDURE = "ssh-bench"


def gen(d, n, port, user, key, known_hosts, cmd):
    addrs = [f"127.0.0.{i + 2}" for i in range(n)]
    q = json.dumps  # YAML accepts JSON strings
    for name, extra in (("cluster.yaml", ""), ("cluster-p0.yaml", "  persist: 0\n")):
        with open(os.path.join(d, name), "w") as f:
            f.write(f"name: ssh-bench\nssh:\n  user: {q(user)}\n  port: {port}\n"
                    f"  identity_file: {q(key)}\n  known_hosts: {q(known_hosts)}\n"
                    f"  connect_timeout: 30s\n{extra}nodes:\n")
            for i, a in enumerate(addrs):
                f.write(f"  - {{name: n{i + 1}, address: {a}, roles: [node]}}\n")
    ssh_args = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
    with open(os.path.join(d, "hosts.yml"), "w") as f:
        f.write("all:\n  vars:\n")
        f.write(f"    ansible_port: {port}\n    ansible_user: {q(user)}\n")
        f.write(f"    ansible_ssh_private_key_file: {q(key)}\n")
        f.write(f"    ansible_ssh_common_args: {q(ssh_args)}\n")
        # The target's python, named, so no interpreter discovery round trips.
        f.write("    ansible_python_interpreter: /usr/bin/python3\n")
        f.write("  hosts:\n")
        for i, a in enumerate(addrs):
            f.write(f"    n{i + 1}: {{ansible_host: {a}}}\n")
    plans = os.path.join(d, "plans")
    os.makedirs(plans, exist_ok=True)
    with open(os.path.join(plans, f"{PROCEDURE}.yaml"), "w") as f:
        f.write(f"name: {PROCEDURE}\ndescription: ssh benchmark, two fan-out phases\nphases:\n"
                f"  - id: first\n    ssh: {{on: {{role: node}}, run: {q(cmd)}}}\n"
                f"  - id: second\n    ssh: {{on: {{role: node}}, run: {q(cmd)}}}\n")
    with open(os.path.join(plans, "ssh-steps.yaml"), "w") as f:
        f.write("name: ssh-steps\ndescription: three ssh phases, executed one per medic run\n"
                "phases:\n")
        for p in "abc":
            f.write(f"  - id: {p}\n    ssh: {{on: {{role: node}}, run: {q(cmd)}}}\n")
    # Diagnostic: each node prints its clock when the command ran; the per-node results
    # (duration_ms, stdout) are captured and printed as one JSON line by a local phase.
    with open(os.path.join(plans, f"{PROCEDURE}-diag.yaml"), "w") as f:
        f.write(f"name: {PROCEDURE}-diag\nphases:\n"
                "  - id: first\n    ssh: {on: {role: node}, run: \"date +%s.%N\"}\n"
                "    capture: {first: nodes}\n"
                "  - id: second\n    ssh: {on: {role: node}, run: \"date +%s.%N\"}\n"
                "    capture: {second: nodes}\n"
                "  - id: dump\n"
                "    run: \"printf '%s\\\\n' {{ ({'first': first, 'second': second} | tojson) ~ '' }}\"\n")


def busy_jiffies():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def timed(cmd, out):
    hz = os.sysconf("SC_CLK_TCK")
    with open(out, "wb") as so, open(out + ".err", "wb") as se:
        b0 = busy_jiffies()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        busy = (busy_jiffies() - b0) / hz
    rc = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "busy_s": busy, "rc": rc}


def fail(label, out, why):
    try:
        with open(out + ".err", "rb") as f:
            err = f.read()[-2000:].decode(errors="replace")
    except OSError:
        err = ""
    sys.exit(f"{label}: {why}\nstderr tail:\n{err}")


def append(results, row):
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")


def run_medic(results, label, n, out, cmd):
    row = timed(cmd, out)
    row["label"] = label
    if row["rc"] != 0:
        fail(label, out, f"exit {row['rc']}; stdout tail: {open(out).read()[-1500:]}")
    doc = json.load(open(out))
    finished = {e["id"]: e for e in doc["events"] if e["event"] == "phase_finished"}
    for pid in ("/first", "/second"):
        e = finished.get(pid)
        if not e or e["state"] != "completed" or e.get("summary") != f"{n} nodes ok":
            fail(label, out, f"phase {pid} did not complete on {n} nodes: {e}")
    row["cold_s"] = finished["/first"]["elapsed_secs"]
    row["warm_s"] = finished["/second"]["elapsed_secs"]
    append(results, row)
    print(f"  {label}: cold phase {row['cold_s'] * 1000:.0f} ms, warm phase "
          f"{row['warm_s'] * 1000:.1f} ms, process {row['wall_s'] * 1000:.0f} ms wall, "
          f"{row['cpu_s']:.2f} s CPU (medic + reaped ssh), machine busy {row['busy_s']:.2f} CPU-s",
          flush=True)


def run_ansible(results, label, n, out, cmd):
    row = timed(cmd, out)
    row["label"] = label
    text = open(out, errors="replace").read()
    ok = sum(1 for line in text.splitlines()
             if " | CHANGED | " in line or " | SUCCESS | " in line)
    if row["rc"] != 0 or ok != n:
        bad = [line for line in text.splitlines() if "UNREACHABLE" in line or "FAILED" in line]
        fail(label, out, f"exit {row['rc']}, {ok} of {n} hosts ok; {bad[:3]}")
    append(results, row)
    print(f"  {label}: {row['wall_s'] * 1000:.0f} ms wall, {row['cpu_s']:.2f} s CPU "
          f"(ansible + its ssh), machine busy {row['busy_s']:.2f} CPU-s, {ok}/{n} ok", flush=True)


def run_plain(results, label, n, out, cmd):
    row = timed(cmd, out)
    row["label"] = label
    if row["rc"] != 0:
        fail(label, out, f"exit {row['rc']}")
    append(results, row)
    print(f"  {label}: {row['wall_s'] * 1000:.0f} ms wall, {row['cpu_s']:.2f} s CPU, "
          f"machine busy {row['busy_s']:.2f} CPU-s", flush=True)


def diag(out, plan_json):
    doc = json.load(open(out))
    lines = [e["line"] for e in doc["events"]
             if e["event"] == "phase_output" and e["id"] == "/dump" and e["stream"] == "stdout"]
    nodes = json.loads(lines[-1])
    plan = json.load(open(plan_json))
    started = {p["id"]: p["started_at"] / 1000.0 for p in plan["phases"]}
    finished = {p["id"]: p["finished_at"] / 1000.0 for p in plan["phases"]}
    for phase in ("first", "second"):
        per = nodes[phase]
        d = sorted(v["duration_ms"] for v in per.values())
        ran = sorted(float(v["stdout"].strip()) - started["/" + phase] for v in per.values())
        span = finished["/" + phase] - started["/" + phase]
        print(f"  {phase} phase ({span * 1000:.0f} ms, from the store's started/finished): "
              f"per-node duration_ms min {d[0]} / median {statistics.median(d):.0f} / "
              f"p90 {d[int(len(d) * 0.9) - 1]} / max {d[-1]}")
        print(f"    command ran on the node at +{ran[0] * 1000:.0f} ms (first) / "
              f"+{statistics.median(ran) * 1000:.0f} ms (median) / +{ran[-1] * 1000:.0f} ms "
              f"(last) after the phase started")


def masters(dirs):
    """ssh processes (mux masters or clients) whose command line names one of dirs."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != "ssh":
            continue
        line = " ".join(argv)
        if not any(d in line for d in dirs):
            continue
        is_master = "-M" in argv or "ControlMaster=auto" in line or "ControlPersist" in line
        if not is_master:
            continue
        sock = ""
        if "-S" in argv:
            sock = argv[argv.index("-S") + 1]
        print(f"{pid} {sock}")


def summary(results, n):
    by = {}
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            by.setdefault(r["label"], []).append(r)

    def med(label, key="wall_s"):
        return statistics.median(r[key] for r in by[label])

    def spread(label, key="wall_s"):
        v = [r[key] * 1000 for r in by[label]]
        return f"{statistics.median(v):.0f} ms" + (
            f" ({min(v):.0f}..{max(v):.0f}, n={len(v)})" if len(v) > 1 else "")

    rows = []

    def add(metric, value, target="", ok=None):
        rows.append((metric, value, target, "" if ok is None else ("PASS" if ok else "FAIL")))

    cold, warm = med("medic", "cold_s"), med("medic", "warm_s")
    add(f"medic cold phase ({n} nodes, connects)", spread("medic", "cold_s"))
    add(f"medic warm phase ({n} nodes, open masters)", spread("medic", "warm_s"),
        "< 200 ms", warm < 0.2)
    add("medic start process wall time", spread("medic"))
    add("medic start machine busy CPU", f"{med('medic', 'busy_s'):.2f} CPU-s")
    raw, cmd = med("ansible raw"), med("ansible command")
    add("ansible -m raw, cold", spread("ansible raw"))
    add("ansible -m command, cold", spread("ansible command"))
    if "ansible raw warm" in by:
        add("ansible -m raw, warm (masters kept)", spread("ansible raw warm"), "(info)")
    if "ansible command warm" in by:
        add("ansible -m command, warm (masters kept)", spread("ansible command warm"), "(info)")
    add("ansible raw machine busy CPU", f"{med('ansible raw', 'busy_s'):.2f} CPU-s")
    if "plain ssh" in by:
        add(f"plain ssh x{n} in parallel, cold (no tool)", spread("plain ssh"), "(info)")
        add("plain ssh machine busy CPU", f"{med('plain ssh', 'busy_s'):.2f} CPU-s")
    if "plain ssh warm" in by:
        add(f"plain ssh -S x{n} over open masters", spread("plain ssh warm"), "(info)")
    add("ratio ansible raw / medic cold", f"{raw / cold:.2f}x", ">= 2x", raw / cold >= 2)
    steps(by, n, add, spread, med)
    add("ratio ansible command / medic cold", f"{cmd / cold:.2f}x", "(info)")

    w = [max(len(str(r[i])) for r in rows + [("metric", "value (median)", "target", "")])
         for i in range(4)]
    line = "+-" + "-+-".join("-" * x for x in w) + "-+"
    print(line)
    print("| " + " | ".join(h.ljust(w[i]) for i, h in
                            enumerate(("metric", "value (median)", "target", ""))) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(str(c).rjust(w[i]) if i == 1 else str(c).ljust(w[i])
                                for i, c in enumerate(r)) + " |")
    print(line)


def steps(by, n, add, spread, med):
    """The step-by-step rows: one `plan execute --phase=` per medic run, this binary and the
    one before, next to ansible's warm run."""
    for who in ("before", "this"):
        if f"{who} step a" not in by:
            continue
        add(f"{who}: plan execute /a ({n} nodes, first step)", spread(f"{who} step a"))
        for p in "bc":
            label = f"{who} step {p}"
            target, ok = ("<= 300 ms", med(label) <= 0.3) if who == "this" else ("(info)", None)
            add(f"{who}: plan execute /{p} (next run)", spread(label), target, ok)
    if "this step b" in by and "ansible raw warm" in by:
        add("ansible -m raw warm / this step b",
            f"{med('ansible raw warm') / med('this step b'):.1f}x", "(info)")


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "gen":
        gen(a[1], int(a[2]), int(a[3]), a[4], a[5], a[6], a[7])
    elif a[0] in ("medic", "ansible", "plain"):
        sep = a.index("--")
        f = {"medic": run_medic, "ansible": run_ansible, "plain": run_plain}[a[0]]
        f(a[1], a[2], int(a[3]), a[4], a[sep + 1:])
    elif a[0] == "diag":
        diag(a[1], a[2])
    elif a[0] == "masters":
        masters(a[1:])
    elif a[0] == "summary":
        summary(a[1], int(a[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
