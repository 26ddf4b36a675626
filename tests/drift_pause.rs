//! Re-checking drift after a long pause: when a run stops at a pause medic reads the drift
//! facts; the first run after a pause longer than the inventory's
//! `policy.drift_recheck_after` compares them with the cluster and refuses (exit 3, the
//! difference named) if they changed; `--force` goes on and history records it. Within the
//! window nothing is compared, and a `resume` that stops at the pause again does not restart
//! the clock.

mod common;

use std::time::Duration;

use common::{history, Env};

const MAINT: &str = r#"
name: maint
phases:
  - id: before
    run: echo before >> "$WORK/log"
  - id: maintenance
    pause: "Do the maintenance"
  - id: after
    run: echo after >> "$WORK/log"
"#;

fn env(window: &str) -> Env {
    let env = Env::new();
    env.procedure("maint", MAINT);
    std::fs::write(
        env.file("cluster.yaml"),
        format!("name: lab\nnodes:\n  - name: n1\npolicy: {{drift_recheck_after: {window}}}\n"),
    )
    .unwrap();
    env
}

/// Changes the inventory (its sha256 is a drift fact).
fn edit_inventory(env: &Env) {
    let mut text = env.read("cluster.yaml");
    text.push_str("# edited during the pause\n");
    std::fs::write(env.file("cluster.yaml"), text).unwrap();
}

#[test]
fn after_a_long_pause_a_changed_cluster_is_refused_until_forced() {
    let env = env("2s");
    env.medic(&["start", "maint"])
        .run()
        .code(0)
        .stdout_contains("paused before /maintenance");
    std::thread::sleep(Duration::from_millis(1200));
    // Stopping at the pause again does not restart the clock.
    env.medic(&["plan", "resume"]).run().code(0);
    std::thread::sleep(Duration::from_millis(1200));
    edit_inventory(&env);
    let out = env
        .medic(&["plan", "execute", "--phase=/maintenance"])
        .run()
        .code(3);
    assert!(
        out.stderr.contains("the cluster changed while operation")
            && out.stderr.contains("was paused (")
            && out.stderr.contains("inventory: sha256 was ")
            && out.stderr.contains(" at pause, now "),
        "{}",
        out.stderr
    );
    env.medic(&["plan", "execute", "--phase=/maintenance", "--force"])
        .run()
        .code(0);
    assert!(history(&env).iter().any(|e| e["forced"] == true
        && e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("changed while operation"))));
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(env.read("log"), "before\nafter\n");
}

#[test]
fn within_the_window_a_resume_goes_on() {
    let env = env("1h");
    env.medic(&["start", "maint"]).run().code(0);
    edit_inventory(&env);
    env.medic(&["plan", "execute", "--phase=/maintenance"])
        .run()
        .code(0);
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(env.read("log"), "before\nafter\n");
}

#[test]
fn a_bad_window_is_refused_at_load() {
    let env = env("soon");
    env.medic(&["start", "maint"])
        .run()
        .code(2)
        .stderr_contains("cluster.yaml:4:31: policy.drift_recheck_after must be a duration");
}
