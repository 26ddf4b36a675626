//! One executor per operation: a second one is refused with exit 3 naming the holder, and
//! readers (`medic plan`) keep working while an executor runs.

mod common;

use std::time::{Duration, Instant};

use common::{phase_states, Env};

const GATED: &str = r#"
name: gated
phases:
  - id: gate
    description: wait for the go file
    wait: {run: "test -f \"$WORK/go\"", timeout: 60s, interval: 50ms}
  - id: after
    run: echo after >> "$WORK/log"
"#;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_second_executor_is_refused_and_names_the_holder_while_readers_keep_working() {
    let env = Env::new();
    env.procedure("gated", GATED);
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    let first = env.medic(&["plan", "resume"]).spawn();
    wait_for("the gate phase to start", || {
        phase_states(&env)
            .iter()
            .any(|(p, s)| p == "/gate" && s == "in_progress")
    });
    // Readers work while the executor runs.
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("executing now: pid")
        .stdout_contains(&format!("pid {}", first.id()));
    let second = env
        .medic(&["plan", "execute", "--phase=/gate"])
        .run()
        .code(3);
    assert!(
        second
            .stderr
            .contains(&format!("is being executed by pid {}", first.id())),
        "{second:?}"
    );
    std::fs::write(env.file("go"), "").unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(env.read("log").trim(), "after");
    // The lease is released: a new executor may run (nothing left to do).
    env.medic(&["plan", "resume"])
        .run()
        .code(0)
        .stdout_contains("already completed");
}

#[test]
fn two_executors_started_at_once_exactly_one_runs() {
    let env = Env::new();
    env.procedure("gated", GATED);
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    let a = env.medic(&["plan", "resume"]).spawn();
    let b = env.medic(&["plan", "resume"]).spawn();
    wait_for("one executor to start the gate", || {
        phase_states(&env)
            .iter()
            .any(|(p, s)| p == "/gate" && s == "in_progress")
    });
    std::fs::write(env.file("go"), "").unwrap();
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(codes, [0, 3], "a: {a:?}\nb: {b:?}");
    let refused = if a.status.code() == Some(3) { &a } else { &b };
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is being executed by pid"));
    assert_eq!(
        env.read("log").lines().count(),
        1,
        "the phase after the gate ran once"
    );
    let history = common::history(&env);
    let starts = history
        .iter()
        .filter(|e| e["event"] == "start" && e["phase"] == "/gate")
        .count();
    assert_eq!(starts, 1);
}

#[test]
fn readers_get_in_while_the_executor_runs_many_quick_phases() {
    let env = Env::new();
    let mut yaml = String::from("name: many\nphases:\n");
    for i in 0..4000 {
        yaml.push_str(&format!("  - id: c{i}\n    check: \"true\"\n"));
    }
    env.procedure("many", &yaml);
    env.medic(&["start", "many", "--manual"]).run().code(0);
    let mut executor = env.medic(&["plan", "resume"]).spawn_quiet();
    // The executor keeps the database open across quick phases; a reader must still get a
    // look at a half-done plan rather than wait for the end.
    let mut partial_seen = false;
    loop {
        let out = env.medic(&["plan", "-o", "json"]).run().code(0);
        let done = out.json()["progress"]["completed"].as_u64().unwrap();
        if done > 0 && done < 4000 {
            partial_seen = true;
        }
        if executor.try_wait().unwrap().is_some() || partial_seen {
            break;
        }
    }
    let status = executor.wait().unwrap();
    assert!(status.success());
    assert!(partial_seen, "no reader got in while the executor ran");
}

#[test]
fn tail_follows_a_run_and_exits_with_its_result() {
    let env = Env::new();
    env.procedure(
        "gated",
        r#"
name: gated
params:
  fail: {default: "no"}
phases:
  - id: gate
    wait: {run: "test -f \"$WORK/go\"", timeout: 60s, interval: 50ms}
  - id: last
    run: test {{ fail }} = no
"#,
    );
    for (fail, code) in [("no", 0), ("yes", 1)] {
        let _ = std::fs::remove_file(env.file("go"));
        env.medic(&[
            "start",
            "gated",
            "--manual",
            "--set",
            &format!("fail={fail}"),
        ])
        .run()
        .code(0);
        let ops = env
            .medic(&["operations", "-o", "json"])
            .run()
            .code(0)
            .json();
        let id = ops["operations"].as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let executor = env
            .medic(&["plan", "resume", "--operation", &id])
            .spawn_quiet();
        wait_for("the gate to start", || {
            let out = env
                .medic(&["plan", "--operation", &id, "-o", "json"])
                .run()
                .code(0);
            out.json()["phases"][0]["state"] == "in_progress"
        });
        let tail = env.medic(&["plan", "--tail", "--operation", &id]).spawn();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(env.file("go"), "").unwrap();
        let out = tail.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{stdout}");
        assert!(
            stdout.contains("executing now"),
            "tail showed the running state: {stdout}"
        );
        assert!(
            stdout.contains(if code == 0 { "✔ /last" } else { "✘ /last" }),
            "{stdout}"
        );
        let _ = executor.wait_with_output();
        env.medic(&["plan", "complete", "--operation", &id])
            .run()
            .code(0);
    }
}
