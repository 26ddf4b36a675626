#!/usr/bin/env python3
"""Helpers for bench/core.sh: generate inputs, time commands, print the summary.

  bench.py gen-procedure NAME N FILE   a medic procedure of N phases, each `check: "true"`
  bench.py gen-playbook N FILE [debug|command]
                                       an ansible playbook of N trivial tasks on localhost
  bench.py measure RESULTS LABEL RUNS OUT -- CMD...
                                       run CMD RUNS times (stdout to OUT, stderr to OUT.err),
                                       append one JSON line per run to RESULTS
  bench.py summary RESULTS PHASES TASKS TASK_KIND
                                       print the table of figures
Each run is measured on its own: wall time, CPU time and peak RSS (ru_maxrss of the child and
the descendants it reaped, KiB) come from bench/rusage.rs when $RUSAGE_BIN names it, else from
os.wait4 here (then RSS has python's own ~15 MiB as a floor).
"""
import json
import os
import statistics
import subprocess
import sys
import time


def gen_procedure(name, n, path):
    with open(path, "w") as f:
        f.write(f"name: {name}\n")
        f.write(f"description: benchmark, {n} trivially true checks in one ordered list\n")
        f.write("phases:\n")
        for i in range(n):
            f.write(f'  - id: c{i}\n    check: "true"\n')


def gen_playbook(n, path, kind):
    if kind == "debug":
        task = "    ansible.builtin.debug:\n      msg: x\n"
    elif kind == "command":
        task = '    ansible.builtin.command: "true"\n    changed_when: false\n'
    else:
        sys.exit(f"unknown task kind {kind}")
    with open(path, "w") as f:
        f.write("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n")
        for i in range(n):
            f.write(f"  - name: t{i}\n{task}")


def measure(results, label, runs, out, cmd):
    """Times CMD RUNS times. With $RUSAGE_BIN (bench/rusage.rs, built by core.sh) the figures
    come from that small helper; without it, from os.wait4 here, whose peak RSS can't go below
    this python process's own (~15 MiB), since the child's exec records its parent's RSS."""
    helper = os.environ.get("RUSAGE_BIN")
    rows = []
    for i in range(runs):
        report = out + ".rusage"
        with open(out, "wb") as so, open(out + ".err", "wb") as se:
            t0 = time.perf_counter()
            argv = [helper, report] + cmd if helper else cmd
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se)
            _, status, ru = os.wait4(p.pid, 0)
            wall = (time.perf_counter() - t0) * 1000.0
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc
        user, sys_, maxrss = ru.ru_utime * 1000, ru.ru_stime * 1000, ru.ru_maxrss
        if helper:
            with open(report) as f:
                w_us, u_us, s_us, maxrss = (int(x) for x in f.read().split())
            wall, user, sys_ = w_us / 1000.0, u_us / 1000.0, s_us / 1000.0
        row = {"label": label, "run": i, "wall_ms": wall, "maxrss_kb": maxrss,
               "user_ms": user, "sys_ms": sys_, "rc": rc,
               "rss_via": "rusage helper" if helper else "python wait4",
               "out_bytes": os.path.getsize(out)}
        rows.append(row)
        print(f"  {label} run {i + 1}/{runs}: {wall:.1f} ms wall, "
              f"{user:.0f} ms user, {sys_:.0f} ms sys, "
              f"{maxrss / 1024:.1f} MiB peak RSS, exit {rc}", flush=True)
        if rc != 0:
            with open(out + ".err", "rb") as se:
                err = se.read()[-2000:].decode(errors="replace")
            print(f"  {label} failed (exit {rc}); stderr tail:\n{err}", file=sys.stderr)
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            sys.exit(1)
    with open(results, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def summary(results, phases, tasks, kind):
    by = {}
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            by.setdefault(r["label"], []).append(r)

    def best(label):
        return min(r["wall_ms"] for r in by[label])

    def med(label):
        return statistics.median(r["wall_ms"] for r in by[label])

    def rss(label):
        return max(r["maxrss_kb"] for r in by[label]) / 1024.0

    rows = []  # (metric, value, target, verdict)

    def add(metric, value, target="", ok=None):
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        rows.append((metric, value, target, verdict))

    m_total = by["medic start N"][0]["wall_ms"]
    m_base = by["medic start 1"][0]["wall_ms"]
    m_per = m_total / phases
    m_marg = (m_total - m_base) / max(phases - 1, 1)
    add(f"medic start, {phases} phases: wall", f"{m_total / 1000:.2f} s")
    add("medic start: user+sys CPU",
        f"{(by['medic start N'][0]['user_ms'] + by['medic start N'][0]['sys_ms']) / 1000:.2f} s")
    add("medic start: peak RSS", f"{rss('medic start N'):.1f} MiB")
    add("medic start, 1 phase (startup): wall", f"{m_base:.1f} ms")
    add("medic ms/phase (total / N)", f"{m_per:.3f} ms")
    add("medic ms/phase (marginal, minus 1-phase run)", f"{m_marg:.3f} ms")

    a_total = by["ansible-playbook N"][0]["wall_ms"]
    a_base = by["ansible-playbook 1"][0]["wall_ms"]
    a_per = a_total / tasks
    a_marg = (a_total - a_base) / max(tasks - 1, 1)
    add(f"ansible-playbook, {tasks} {kind} tasks: wall", f"{a_total / 1000:.2f} s")
    add("ansible-playbook: peak RSS", f"{rss('ansible-playbook N'):.1f} MiB")
    add("ansible-playbook, 1 task (startup): wall", f"{a_base:.1f} ms")
    add("ansible ms/task (total / N)", f"{a_per:.3f} ms")
    add("ansible ms/task (marginal, minus 1-task run)", f"{a_marg:.3f} ms")
    ratio = a_per / m_per
    add("ratio ansible ms/task / medic ms/phase", f"{ratio:.1f}x", ">= 20x", ratio >= 20)
    if m_marg > 0:
        add("ratio, marginal per step", f"{a_marg / m_marg:.1f}x", "(info)")

    for label in ("medic plan", "medic plan -o json"):
        b, m, r = best(label), med(label), rss(label)
        n = len(by[label])
        add(f"{label}: best / median of {n}", f"{b:.1f} / {m:.1f} ms", "< 100 ms", m < 100)
        add(f"{label}: peak RSS", f"{r:.1f} MiB", "< 50 MB", r * 1024 * 1024 < 50e6)
        add(f"{label}: output size", f"{by[label][0]['out_bytes'] / 1024:.0f} KiB")

    via = {r.get("rss_via") for rs in by.values() for r in rs}
    add("peak RSS measured with", ", ".join(sorted(via)))

    w = [max(len(str(r[i])) for r in rows + [("metric", "value", "target", "")]) for i in range(4)]
    line = "+-" + "-+-".join("-" * x for x in w) + "-+"
    print(line)
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(("metric", "value", "target", ""))) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w[i]) if i != 1 else str(c).rjust(w[i])
                                for i, c in enumerate(r)) + " |")
    print(line)


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "gen-procedure":
        gen_procedure(a[1], int(a[2]), a[3])
    elif a[0] == "gen-playbook":
        gen_playbook(int(a[1]), a[2], a[3] if len(a) > 3 else "debug")
    elif a[0] == "measure":
        sep = a.index("--")
        measure(a[1], a[2], int(a[3]), a[4], a[sep + 1:])
    elif a[0] == "summary":
        summary(a[1], int(a[2]), int(a[3]), a[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
