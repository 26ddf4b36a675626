//! Operator-facing text under review: a change to what operators read shows up as a snapshot diff.

mod common;

use common::Env;

const PROC: &str = r#"
name: maint
description: Take a node out of service for maintenance
params:
  node: {description: node to take down, required: true}
  token: {secret: true, default: "abc123"}
phases:
  - id: cordon
    description: Stop scheduling onto {{ node }}
    run: echo cordon {{ node }}
    rollback: {run: "echo uncordon {{ node }}"}
  - id: find
    run: "echo '{\"id\": 7}'"
    capture: {member: json.id}
    idempotent: true
  - id: maintenance
    pause: Do the maintenance on {{ node }}
  - id: remove
    description: remove member {{ member }}
    run: echo remove {{ member }} --token {{ token }}
    timeout: 2m
    retries: 2
"#;

fn scrub(env: &Env, text: &str) -> String {
    text.replace(&env.path().display().to_string(), "[TMP]")
}

#[test]
fn dry_run_report() {
    let env = Env::new();
    env.procedure("maint", PROC);
    let out = env
        .medic(&["start", "maint", "--set", "node=n1; rm -rf /", "--dry-run"])
        .run()
        .code(0);
    insta::assert_snapshot!(scrub(&env, &out.stdout));
}

#[test]
fn refusal_messages() {
    let env = Env::new();
    env.procedure("maint", PROC);
    env.medic(&["start", "maint", "--set", "node=n1", "--manual"])
        .run()
        .code(0);
    let requires = env
        .medic(&["plan", "execute", "--phase=/remove"])
        .run()
        .code(3);
    env.medic(&["plan", "execute", "--phase=/cordon"])
        .run()
        .code(0);
    env.medic(&["plan", "execute", "--phase=/find"])
        .run()
        .code(0);
    let dependents = env
        .medic(&["plan", "rollback", "--phase=/cordon"])
        .run()
        .code(3);
    insta::assert_snapshot!(format!("{}\n{}", requires.stderr, dependents.stderr));
}

#[test]
fn validation_report() {
    let env = Env::new();
    env.procedure(
        "bad",
        "name: bad\nphases:\n  - id: a\n    requries: [b]\n    run: echo {{ nod }}\n  - id: a\n    check: \"true\"\n  - id: c\n    requires: [/d]\n    timeout: soon\n    wait: {run: \"true\"}\n",
    );
    let out = env.medic(&["start", "bad"]).run().code(2);
    insta::assert_snapshot!(scrub(&env, &out.stderr));
}
