#!/usr/bin/env python3
"""Helpers for bench/core.sh: generate inputs, time commands, print the summary.

  bench.py gen-procedure NAME N FILE   a medic procedure of N phases, each `check: "true"`
  bench.py gen-playbook N FILE [debug|command]
                                       an ansible playbook of N trivial tasks on localhost
  bench.py measure RESULTS LABEL RUNS OUT -- CMD...
                                       run CMD RUNS times (stdout to OUT, stderr to OUT.err),
                                       append one JSON line per run to RESULTS
  bench.py dir-size RESULTS LABEL DIR  record the bytes DIR takes on disk
  bench.py summary RESULTS PHASES TASKS TASK_KIND
                                       print the table of figures (a column for the
                                       "before: " labels too when they were measured)
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
    """The figures of this binary ("" labels) and, when measured, of the before binary
    ("before: " labels) side by side, with issue 18's targets (verdicts for this binary)."""
    by = {}
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            by.setdefault(r["label"], []).append(r)
    sides = [("before: ", "before")] if "before: medic start N" in by else []
    sides.append(("", "this"))

    def best(label):
        return min(r["wall_ms"] for r in by[label])

    def med(label):
        return statistics.median(r["wall_ms"] for r in by[label])

    def rss(label):
        return max(r["maxrss_kb"] for r in by[label]) / 1024.0

    rows = []  # (metric, values per side, target, verdict)

    def add(metric, values, target="", ok=None):
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        rows.append((metric, values, target, verdict))

    def per_side(fn):
        return [fn(p) for p, _ in sides]

    a_total = by["ansible-playbook N"][0]["wall_ms"]
    a_base = by["ansible-playbook 1"][0]["wall_ms"]
    a_per = a_total / tasks
    a_marg = (a_total - a_base) / max(tasks - 1, 1)

    def m_per(p):
        return by[p + "medic start N"][0]["wall_ms"] / phases

    def m_marg(p):
        total, base = by[p + "medic start N"][0]["wall_ms"], by[p + "medic start 1"][0]["wall_ms"]
        return (total - base) / max(phases - 1, 1)

    def cpu(p):
        r = by[p + "medic start N"][0]
        return (r["user_ms"] + r["sys_ms"]) / 1000

    add(f"medic start, {phases} phases: wall",
        per_side(lambda p: f"{by[p + 'medic start N'][0]['wall_ms'] / 1000:.2f} s"))
    add("medic start: user+sys CPU", per_side(lambda p: f"{cpu(p):.2f} s"))
    add("medic start: peak RSS", per_side(lambda p: f"{rss(p + 'medic start N'):.1f} MiB"))
    add("medic start, 1 phase (startup): wall",
        per_side(lambda p: f"{by[p + 'medic start 1'][0]['wall_ms']:.1f} ms"))
    add("medic ms/phase (total / N)", per_side(lambda p: f"{m_per(p):.3f} ms"),
        "<= 0.25 ms", m_per("") <= 0.25)
    add("medic ms/phase (marginal, minus 1-phase run)", per_side(lambda p: f"{m_marg(p):.3f} ms"))
    add("state dir after the run", per_side(
        lambda p: f"{by[p + 'state dir'][0]['bytes'] / 1e6:.1f} MB"),
        "<= 10 MB", by["state dir"][0]["bytes"] <= 10e6)

    add(f"ansible-playbook, {tasks} {kind} tasks: wall", [f"{a_total / 1000:.2f} s"] * len(sides))
    add("ansible-playbook: peak RSS", [f"{rss('ansible-playbook N'):.1f} MiB"] * len(sides))
    add("ansible ms/task (total / N)", [f"{a_per:.3f} ms"] * len(sides))
    add("ansible ms/task (marginal, minus 1-task run)", [f"{a_marg:.3f} ms"] * len(sides))
    add("ratio ansible ms/task / medic ms/phase", per_side(lambda p: f"{a_per / m_per(p):.1f}x"),
        ">= 100x", a_per / m_per("") >= 100)
    add("ratio, marginal per step",
        per_side(lambda p: f"{a_marg / m_marg(p):.1f}x" if m_marg(p) > 0 else "-"), "(info)")

    for label in ("medic plan", "medic plan -o json", "medic plan --short"):
        n = len(by[label])
        add(f"{label}: best / median of {n}",
            per_side(lambda p: f"{best(p + label):.1f} / {med(p + label):.1f} ms"),
            "<= 40 ms median", med(label) <= 40)
        add(f"{label}: peak RSS", per_side(lambda p: f"{rss(p + label):.1f} MiB"),
            "<= 30 MiB", rss(label) <= 30)
        add(f"{label}: output size",
            per_side(lambda p: f"{by[p + label][0]['out_bytes'] / 1024:.0f} KiB"))

    via = {r.get("rss_via") for rs in by.values() for r in rs if "rss_via" in r}
    add("peak RSS measured with", [", ".join(sorted(via))] * len(sides))

    header = ("metric", *[name for _, name in sides], "target", "")
    table = [(m, *v, t, ok) for m, v, t, ok in rows]
    w = [max(len(str(r[i])) for r in table + [header]) for i in range(len(header))]
    line = "+-" + "-+-".join("-" * x for x in w) + "-+"
    print(line)
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(header)) + " |")
    print(line)
    for r in table:
        print("| " + " | ".join(str(c).rjust(w[i]) if 0 < i <= len(sides) else str(c).ljust(w[i])
                                for i, c in enumerate(r)) + " |")
    print(line)


def dir_size(results, label, path):
    """Records the bytes the files under `path` take on disk (as du counts them)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    with open(results, "a") as f:
        f.write(json.dumps({"label": label, "bytes": total}) + "\n")
    print(f"{label}: {total / 1e6:.1f} MB")


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
    elif a[0] == "dir-size":
        dir_size(a[1], a[2], a[3])
    elif a[0] == "summary":
        summary(a[1], int(a[2]), int(a[3]), a[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
