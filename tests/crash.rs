//! Crash safety: SIGKILL of the executor at random moments never loses a transition, never runs
//! a completed phase twice, and always leaves a database that opens and a plan that resumes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{kill9, phase_states, Env, Rng};

const PHASES: usize = 14;

fn procedure() -> String {
    let mut yaml = String::from("name: crashy\ndescription: phases that log their id\nphases:\n");
    for i in 0..PHASES {
        // A short sleep after the append leaves room to be killed mid-phase.
        yaml.push_str(&format!(
            "  - id: p{i:02}\n    idempotent: true\n    run: echo p{i:02} >> \"$WORK/log\"; sleep 0.{}\n",
            1 + i % 3
        ));
        if i % 4 == 3 {
            yaml.push_str(&format!(
                "  - id: c{i:02}\n    check: \"{{{{ {i} >= 0 }}}}\"\n"
            ));
        }
    }
    yaml
}

fn counts(env: &Env) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in env.read("log").lines() {
        *out.entry(line.to_string()).or_default() += 1;
    }
    out
}

#[test]
fn sigkill_at_random_moments_then_resume_finishes_without_repeating_completed_phases() {
    let env = Env::new();
    env.procedure("crashy", &procedure());
    env.medic(&["start", "crashy", "--manual"]).run().code(0);
    let mut rng = Rng::from_env("crash test");
    let mut completed: BTreeSet<String> = BTreeSet::new();
    let mut interruptions: BTreeMap<String, usize> = BTreeMap::new();
    let mut frozen_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut kills = 0;
    for _ in 0..40 {
        let child = env.medic(&["plan", "resume"]).spawn();
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 700));
        kill9(child.id());
        let _ = child.wait_with_output();
        kills += 1;

        let states = phase_states(&env);
        let now_completed: BTreeSet<String> = states
            .iter()
            .filter(|(_, s)| s == "completed")
            .map(|(p, _)| p.clone())
            .collect();
        assert!(
            completed.is_subset(&now_completed),
            "a completed phase went back: {states:?}"
        );
        assert!(
            !states.iter().any(|(_, s)| s == "in_progress"),
            "a dead executor's phase must show as interrupted: {states:?}"
        );
        let interrupted: Vec<&String> = states
            .iter()
            .filter(|(_, s)| s == "interrupted")
            .map(|(p, _)| p)
            .collect();
        assert!(
            interrupted.len() <= 1,
            "one phase runs at a time here: {states:?}"
        );
        if let Some(p) = interrupted.first() {
            *interruptions.entry((*p).clone()).or_default() += 1;
            env.medic(&["plan"])
                .run()
                .code(0)
                .stdout_contains(&format!("{p} was interrupted"));
        }
        let now_counts = counts(&env);
        for (phase, count) in &frozen_counts {
            assert_eq!(
                now_counts.get(phase),
                Some(count),
                "completed phase {phase} ran again (seed {})",
                rng.seed
            );
        }
        for p in &now_completed {
            if p.starts_with("/p") {
                frozen_counts
                    .entry(p.trim_start_matches('/').to_string())
                    .or_insert(now_counts[p.trim_start_matches('/')]);
            }
        }
        completed = now_completed;
        if completed.len() == states.len() {
            break;
        }
    }
    eprintln!("{kills} kills; interrupted phases: {interruptions:?}");
    env.medic(&["plan", "resume"]).run().code(0);
    let states = phase_states(&env);
    assert!(states.iter().all(|(_, s)| s == "completed"), "{states:?}");

    let counts = counts(&env);
    for i in 0..PHASES {
        let name = format!("p{i:02}");
        let ran = counts.get(&name).copied().unwrap_or(0);
        let allowed = 1 + interruptions.get(&format!("/{name}")).copied().unwrap_or(0);
        assert!(
            ran >= 1 && ran <= allowed,
            "{name} ran {ran} times, allowed {allowed} (seed {})",
            rng.seed
        );
    }
    // First appearances are in plan order.
    let order: Vec<String> = env.read("log").lines().fold(Vec::new(), |mut acc, l| {
        if !acc.iter().any(|x: &String| x == l) {
            acc.push(l.to_string());
        }
        acc
    });
    let expected: Vec<String> = (0..PHASES).map(|i| format!("p{i:02}")).collect();
    assert_eq!(order, expected);

    // No transition is lost: per phase, each recorded change starts where the last one ended,
    // and each phase completed exactly once.
    let history = common::history(&env);
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut completes: BTreeMap<String, usize> = BTreeMap::new();
    for e in &history {
        let (Some(phase), Some(from), Some(to)) =
            (e["phase"].as_str(), e["from"].as_str(), e["to"].as_str())
        else {
            continue;
        };
        let prev = last.get(phase).map(|s| s.as_str()).unwrap_or("unstarted");
        assert_eq!(from, prev, "history of {phase} skips a transition: {e}");
        last.insert(phase.to_string(), to.to_string());
        if e["event"] == "complete" {
            *completes.entry(phase.to_string()).or_default() += 1;
        }
    }
    assert_eq!(completes.len(), states.len());
    assert!(completes.values().all(|n| *n == 1), "{completes:?}");
}

#[test]
fn an_interrupted_phase_that_is_not_idempotent_needs_force() {
    let env = Env::new();
    env.procedure(
        "once",
        r#"
name: once
phases:
  - id: once
    run: echo once >> "$WORK/log"; sleep 30
"#,
    );
    env.medic(&["start", "once", "--manual"]).run().code(0);
    let child = env.medic(&["plan", "resume"]).spawn();
    let started = Instant::now();
    while !env.read("log").contains("once") {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(child.id());
    let _ = child.wait_with_output();
    // The command dies with medic (no orphan keeps running); its watchdog may take a moment.
    let marker = format!("WORK={}", env.path().display());
    let survivors = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .chars()
                    .all(|c| c.is_ascii_digit())
            })
            .filter(|e| {
                let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
                environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
            })
            .map(|e| {
                std::fs::read_to_string(e.path().join("cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            })
            .filter(|c| !c.is_empty())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !survivors().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the phase's command outlived the killed executor: {:?}",
            survivors()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.medic(&["plan", "resume"])
        .run()
        .code(3)
        .stderr_contains("phase /once was interrupted and is not idempotent")
        .stderr_contains("--force");
    assert_eq!(env.read("log").lines().count(), 1);
    env.medic(&["plan", "rollback", "--phase=/once", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("/once");
}
