//! Bounded resources (issue 10, section 4): hostile templates, plan sizes and command output,
//! each run through the real binary with its peak memory and wall time measured by the harness
//! (wait4's rusage of the child, which covers the commands medic ran and waited for). The
//! bounds are generous — several times what a debug build needs — they catch "grows without
//! limit", not slowness; each case also asserts the clear error or the marker it must leave.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, Output};

/// A run of medic with its peak RSS (KiB) and wall time.
struct Measured {
    out: Output,
    max_rss_kib: i64,
    wall: Duration,
}

/// Runs medic with `args` (and `env`), reading its output while it runs, and reaps it with
/// wait4 to get its rusage.
// The child is reaped by wait4, which std's Child cannot do, for its rusage.
#[allow(clippy::zombie_processes)]
fn measured(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Measured {
    let mut run = env.medic(args);
    for (k, v) in vars {
        run = run.env(k, v);
    }
    let started = Instant::now();
    let mut child = run
        .command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn medic");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, which std's Child will not wait for again.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    let wall = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Measured {
        out: Output {
            code,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        },
        max_rss_kib: usage.ru_maxrss,
        wall,
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// `q0` includes `q1` twice, ..., `q24` includes `q25` twice: 2^26 phases if expanded.
fn fan_out(env: &Env) {
    for k in 0..26 {
        let body = if k < 25 {
            format!(
                "  - id: a\n    include: {{procedure: q{n}}}\n  - id: b\n    include: {{procedure: q{n}}}\n",
                n = k + 1
            )
        } else {
            "  - id: leaf\n    check: \"true\"\n".to_string()
        };
        env.procedure(
            &format!("q{k}"),
            &format!("name: q{k}\ndescription: level {k}\nphases:\n{body}"),
        );
    }
}

/// A foreach of `n` items inside a foreach of `n` items: n² phases.
fn wide(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
    format!(
        "name: wide\nparams:\n  items: {{type: list, default: [{}]}}\nphases:\n  - id: outer\n    foreach: \"{{{{ items }}}}\"\n    as: i\n    phases:\n      - id: inner\n        foreach: \"{{{{ items }}}}\"\n        as: j\n        check: \"true\"\n",
        items.join(", ")
    )
}

fn flat(n: usize) -> String {
    let mut p = format!("name: flat\ndescription: {n} checks\nphases:\n");
    for i in 0..n {
        p.push_str(&format!("  - id: c{i}\n    check: \"true\"\n"));
    }
    p
}

struct Case {
    name: &'static str,
    /// Procedures to write: (name, yaml).
    procedures: Vec<(&'static str, String)>,
    /// Writes more files (e.g. the include fan-out).
    setup: fn(&Env),
    runs: Vec<Step>,
}

/// One medic command of a case and what it must show.
struct Step {
    args: &'static [&'static str],
    vars: &'static [(&'static str, &'static str)],
    code: i32,
    /// Each must appear in stdout or stderr.
    shows: &'static [&'static str],
    max_rss_mib: i64,
    max_secs: u64,
}

fn step(args: &'static [&'static str], code: i32, shows: &'static [&'static str]) -> Step {
    Step {
        args,
        vars: &[],
        code,
        shows,
        max_rss_mib: 300,
        max_secs: 60,
    }
}

fn no_setup(_: &Env) {}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a huge lazy list rendered into a command fails the phase at once",
            procedures: vec![(
                "huge",
                "name: huge\nparams:\n  n: {default: '1000000000'}\nphases:\n  - id: a\n    run: \"echo {{ [1] * (n | int) }}\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![
                step(&["start", "huge", "--dry-run"], 0, &["larger than 1 MiB (the limit)"]),
                step(&["start", "huge"], 1, &["larger than 1 MiB (the limit)"]),
            ],
        },
        Case {
            name: "a huge constant list is refused when the procedure loads",
            procedures: vec![(
                "hugeconst",
                "name: hugeconst\nphases:\n  - id: a\n    run: \"echo {{ [1] * 1000000000 }}\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![step(
                &["start", "hugeconst", "--dry-run"],
                2,
                &["plans/hugeconst.yaml:4:", "larger than 1 MiB (the limit)"],
            )],
        },
        Case {
            name: "nested loops in a description run out of fuel when the plan is built",
            procedures: vec![(
                "loops",
                "name: loops\nphases:\n  - id: a\n    description: \"{% for i in 'x' * 100000 %}{% for j in 'x' * 100000 %}{% endfor %}{% endfor %}\"\n    check: \"true\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![step(
                &["start", "loops", "--dry-run"],
                2,
                &["more than 1000000 steps to evaluate (the limit)"],
            )],
        },
        Case {
            name: "a string repeated past the limit in a text value fails",
            procedures: vec![(
                "longtext",
                "name: longtext\nphases:\n  - id: a\n    description: \"{{ 'x' * 5000000 }}\"\n    check: \"true\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![step(
                &["start", "longtext", "--dry-run"],
                2,
                &["larger than 1 MiB (the limit)"],
            )],
        },
        Case {
            name: "nested foreach over a million items stops at the phase cap while expanding",
            procedures: vec![("wide", wide(1000))],
            setup: no_setup,
            runs: vec![step(
                &["start", "wide", "--dry-run"],
                2,
                &["procedure `wide` expands to more than 50000 phases", "--max-phases"],
            )],
        },
        Case {
            name: "an include fan-out is refused quickly by every command that loads it",
            procedures: vec![],
            setup: fan_out,
            runs: vec![
                step(&["procedures"], 0, &["q0", "invalid"]),
                step(
                    &["procedures", "show", "q0"],
                    2,
                    &["procedure `q0` expands to more than 50000 phases"],
                ),
                step(
                    &["start", "q0", "--dry-run"],
                    2,
                    &["procedure `q0` expands to more than 50000 phases"],
                ),
                // A level small enough still loads (2^14 phases).
                step(&["procedures", "show", "q12"], 0, &["/b/b/b/b/b/b/b/b/b/b/b/b/b/leaf"]),
            ],
        },
        Case {
            name: "the phase cap is configurable by environment and flag",
            procedures: vec![("flat", flat(20))],
            setup: no_setup,
            runs: vec![
                Step {
                    vars: &[("MEDIC_MAX_PHASES", "10")],
                    ..step(&["start", "flat", "--dry-run"], 2, &["more than 10 phases"])
                },
                step(
                    &["--max-phases", "19", "start", "flat", "--dry-run"],
                    2,
                    &["more than 19 phases"],
                ),
                step(&["--max-phases", "20", "start", "flat", "--dry-run"], 0, &["/c19"]),
            ],
        },
        Case {
            name: "a 20,000-phase plan builds, runs and is shown",
            procedures: vec![("flat", flat(20_000))],
            setup: no_setup,
            runs: vec![
                Step {
                    max_secs: 120,
                    ..step(&["start", "flat"], 0, &["every phase completed"])
                },
                step(&["plan", "--short"], 0, &[]),
            ],
        },
        Case {
            name: "half a million lines of output keep memory and the database bounded",
            procedures: vec![(
                "seq",
                "name: seq\nphases:\n  - id: big\n    run: \"seq 1 500000\"\n  - id: after\n    run: \"echo after\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![
                Step {
                    max_secs: 120,
                    ..step(&["start", "seq"], 0, &["every phase completed"])
                },
                step(
                    &["plan", "logs", "--phase=/big"],
                    0,
                    &[
                        "/big [out] 1\n",
                        "/big [out] 500000\n",
                        "of output dropped here: a phase's log keeps its first 1 MiB and its last 1 MiB",
                    ],
                ),
                step(&["plan", "logs", "-o", "json"], 0, &["\"text\":\"after\""]),
            ],
        },
        Case {
            name: "-o json keeps the first MiB of a phase's output and says the rest is left out",
            procedures: vec![(
                "seq",
                "name: seq\nphases:\n  - id: big\n    run: \"seq 1 500000\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![Step {
                max_secs: 120,
                ..step(
                    &["start", "seq", "-o", "json"],
                    0,
                    &["the rest of this phase's output is left out here; run `medic plan logs --phase=/big`"],
                )
            }],
        },
        Case {
            name: "a 100 MB line without a newline is cut, not held",
            procedures: vec![(
                "line",
                "name: line\nphases:\n  - id: big\n    run: \"head -c 100000000 /dev/zero | tr '\\\\0' x\"\n".into(),
            )],
            setup: no_setup,
            runs: vec![
                step(&["start", "line"], 0, &["every phase completed"]),
                step(
                    &["plan", "logs"],
                    0,
                    &["line cut: 99934464 more bytes not kept; lines are kept up to 64 KiB"],
                ),
            ],
        },
        Case {
            name: "a result cut at 1 MiB says so and is not parsed as JSON",
            procedures: vec![(
                "cut",
                "name: cut\nphases:\n  - id: big\n    run: \"echo '['; seq -f '%g,' 1 300000; echo '0]'\"\n    capture: {was_cut: truncated}\n  - id: say\n    run: \"echo was_cut={{ was_cut }}\"\n  - id: parse\n    run: \"echo '['; seq -f '%g,' 1 300000; echo '0]'\"\n    capture: {doc: json}\n".into(),
            )],
            setup: no_setup,
            runs: vec![
                step(&["start", "cut"], 1, &["capture `doc`: `json` found nothing in the result"]),
                step(&["plan", "logs", "--phase=/say"], 0, &["was_cut=True"]),
            ],
        },
    ]
}

#[test]
fn limits_table() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let env = Env::new();
        for (name, yaml) in &case.procedures {
            env.procedure(name, yaml);
        }
        (case.setup)(&env);
        for step in &case.runs {
            let m = measured(&env, step.args, step.vars);
            let both = format!("{}{}", m.out.stdout, m.out.stderr);
            let mut problems = Vec::new();
            if m.out.code != step.code {
                problems.push(format!("exit {} (want {})", m.out.code, step.code));
            }
            for want in step.shows {
                if !both.contains(want) {
                    problems.push(format!("output lacks {want:?}"));
                }
            }
            if both.contains("panicked") {
                problems.push("panicked".into());
            }
            if m.max_rss_kib > step.max_rss_mib * 1024 {
                problems.push(format!(
                    "peak RSS {} MiB over {} MiB",
                    m.max_rss_kib / 1024,
                    step.max_rss_mib
                ));
            }
            if m.wall > Duration::from_secs(step.max_secs) {
                problems.push(format!("took {:?}, over {} s", m.wall, step.max_secs));
            }
            if !problems.is_empty() {
                let tail: String = both
                    .chars()
                    .rev()
                    .take(1500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                failures.push(format!(
                    "{} / medic {}: {}\n{tail}",
                    case.name,
                    step.args.join(" "),
                    problems.join("; ")
                ));
            }
        }
        // Whatever a case did, the state it left stays small.
        let size = dir_size(&env.state_dir());
        if size > 64 << 20 {
            failures.push(format!("{}: state dir is {} MiB", case.name, size >> 20));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The `ssh` action reads remote output through the same bounded reader and log cap.
#[test]
fn ssh_output_is_bounded_like_local_output() {
    let sshd = common::sshd::Sshd::start(1);
    let env = Env::new();
    sshd.write_worker_inventory(env.path());
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: big\n    ssh: {on: n1, run: \"seq 1 500000; head -c 20000000 /dev/zero | tr '\\\\0' x; echo; echo last\"}\n",
    );
    let m = measured(&env, &["start", "p"], &[]);
    assert!(m.max_rss_kib < 300 * 1024, "peak RSS {} KiB", m.max_rss_kib);
    assert!(m.wall < Duration::from_secs(120), "took {:?}", m.wall);
    m.out.code(0);
    env.medic(&["plan", "logs"])
        .run()
        .code(0)
        .stdout_contains("[n1] 1\n")
        .stdout_contains("of output dropped here")
        .stdout_contains("line cut: 19934464 more bytes")
        .stdout_contains("[n1] last\n");
    let size = dir_size(&env.state_dir());
    assert!(size < 64 << 20, "state dir is {} MiB", size >> 20);
}
