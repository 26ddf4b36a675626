//! `medic plan set` (a phase's state recorded by hand), operations that must not collide
//! (`medic start` against another active operation's nodes or the etcd membership), and the
//! hints the plan table gives for an interrupted phase — through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{history, kill9, state_of, Env};

/// Three ordered phases that log their ID, and a group of two.
const ABC: &str = r#"
name: abc
description: ordered phases and a group
phases:
  - id: a
    run: echo a >> "$WORK/log"
  - id: b
    run: echo b >> "$WORK/log"
  - id: g
    phases:
      - id: x
        run: echo x >> "$WORK/log"
      - id: y
        run: echo y >> "$WORK/log"
"#;

fn log_lines(env: &Env) -> Vec<String> {
    env.read("log").lines().map(|s| s.to_string()).collect()
}

fn manual_sets(env: &Env) -> Vec<serde_json::Value> {
    history(env)
        .into_iter()
        .filter(|e| e["event"] == "manual_set")
        .collect()
}

#[test]
fn plan_set_needs_a_reason_and_a_leaf_and_requirements_follow_it() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);

    // No reason: refused before anything changes.
    env.medic(&["plan", "set", "--phase=/a", "--state=completed"])
        .run()
        .code(2)
        .stderr_contains("needs --reason");
    env.medic(&[
        "plan",
        "set",
        "--phase=/a",
        "--state",
        "completed",
        "--reason",
        " ",
    ])
    .run()
    .code(2)
    .stderr_contains("needs --reason");
    assert_eq!(state_of(&env, "/a"), "unstarted");
    assert!(manual_sets(&env).is_empty());

    // A group: refused, naming its leaves.
    env.medic(&[
        "plan",
        "set",
        "--phase=/g",
        "--state=completed",
        "--reason=done by hand",
    ])
    .run()
    .code(2)
    .stderr_contains("/g is a group")
    .stderr_contains("/g/x, /g/y");
    env.medic(&[
        "plan",
        "set",
        "--phase=/bb",
        "--state=completed",
        "--reason=r",
    ])
    .run()
    .code(2)
    .stderr_contains("did you mean /b?");

    // /b requires /a: refused until /a is completed, by hand here.
    env.medic(&["plan", "execute", "--phase=/b"]).run().code(3);
    let out = env
        .medic(&[
            "plan",
            "set",
            "--phase=/a",
            "--state=completed",
            "--reason=ran it by hand",
            "-o",
            "json",
        ])
        .run()
        .code(0);
    let change = &out.json()["change"];
    assert_eq!(change["from"], "unstarted");
    assert_eq!(change["to"], "completed");
    assert_eq!(change["changed"], true);
    assert_eq!(state_of(&env, "/a"), "completed");
    let sets = manual_sets(&env);
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0]["phase"], "/a");
    assert_eq!(sets[0]["from"], "unstarted");
    assert_eq!(sets[0]["to"], "completed");
    assert_eq!(sets[0]["reason"], "ran it by hand");
    env.medic(&["plan", "history"])
        .run()
        .code(0)
        .stdout_contains("manual_set /a unstarted → completed")
        .stdout_contains("reason: ran it by hand");
    env.medic(&["plan", "execute", "--phase=/b"]).run().code(0);
    assert_eq!(log_lines(&env), ["b"], "/a was done by hand, never run");

    // Setting it again changes nothing and records nothing.
    env.medic(&[
        "plan",
        "set",
        "--phase=/a",
        "--state=completed",
        "--reason=again",
    ])
    .run()
    .code(0)
    .stdout_contains("already completed");
    assert_eq!(manual_sets(&env).len(), 1);

    // Unstarted: resume runs it again (and what follows).
    env.medic(&[
        "plan",
        "set",
        "--phase=/b",
        "--state=unstarted",
        "--reason=redo it",
    ])
    .run()
    .code(0)
    .stdout_contains("set to unstarted by hand (was completed)");
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(log_lines(&env), ["b", "b", "x", "y"]);

    // Failed: the parent's derived state and the requirement checks follow.
    env.medic(&[
        "plan",
        "set",
        "--phase=/g/x",
        "--state=failed",
        "--reason=it broke later",
    ])
    .run()
    .code(0);
    assert_eq!(state_of(&env, "/g/x"), "failed");
    let plan = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    let group = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "/g")
        .unwrap()
        .clone();
    assert_eq!(group["state"], "failed");
    env.medic(&[
        "plan",
        "set",
        "--phase=/g/y",
        "--state=unstarted",
        "--reason=redo after x",
    ])
    .run()
    .code(0);
    env.medic(&["plan", "execute", "--phase=/g/y"])
        .run()
        .code(3)
        .stderr_contains("requires /g/x, which is failed");
}

#[test]
fn plan_set_is_refused_while_an_executor_holds_the_lease() {
    let env = Env::new();
    env.procedure(
        "slow",
        r#"
name: slow
phases:
  - id: sleep
    run: echo started >> "$WORK/log"; sleep 20
  - id: after
    run: echo after >> "$WORK/log"
"#,
    );
    env.medic(&["start", "slow", "--manual"]).run().code(0);
    let child = env.medic(&["plan", "resume"]).spawn();
    let started = Instant::now();
    while !env.read("log").contains("started") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "phase never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    env.medic(&[
        "plan",
        "set",
        "--phase=/after",
        "--state=completed",
        "--reason=r",
    ])
    .run()
    .code(3)
    .stderr_contains("is being executed by");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let _ = child.wait_with_output();
    assert_eq!(state_of(&env, "/after"), "unstarted");
    assert!(manual_sets(&env).is_empty());
}

const CLUSTER: &str = r#"
name: test
ssh: {user: ops, known_hosts: ./known_hosts}
nodes:
  - {name: cp-1, address: 127.0.0.11, roles: [control-plane, etcd]}
  - {name: cp-2, address: 127.0.0.12, roles: [control-plane, etcd]}
  - {name: w-1, address: 127.0.0.21, roles: [worker]}
kubernetes: {kubeconfig: ./kubeconfig}
etcd: {endpoints: ["http://127.0.0.11:2379"]}
"#;

/// Procedures acting on nodes over ssh (by name or role), through kube, and on etcd membership.
fn cluster_env() -> Env {
    let env = Env::new();
    std::fs::write(env.file("cluster.yaml"), CLUSTER).unwrap();
    std::fs::write(env.file("known_hosts"), "").unwrap();
    std::fs::write(env.file("kubeconfig"), "apiVersion: v1\nkind: Config\n").unwrap();
    env.procedure(
        "maint",
        r#"
name: maint
params: {node: {required: true}}
phases:
  - id: stop
    ssh: {on: "{{ node }}", run: systemctl stop kubelet}
"#,
    );
    env.procedure(
        "cordon",
        r#"
name: cordon
params: {node: {required: true}}
phases:
  - id: cordon
    kube: {cordon: "{{ node }}"}
"#,
    );
    env.procedure(
        "control-planes",
        r#"
name: control-planes
phases:
  - id: check
    ssh: {on: {role: control-plane}, run: "true"}
"#,
    );
    env.procedure(
        "etcd-rm",
        r#"
name: etcd-rm
params: {member: {required: true}}
phases:
  - id: list
    etcd: {member_list: {}}
  - id: remove
    etcd: {member_remove: {name: "{{ member }}"}}
"#,
    );
    env
}

fn operation_ids(env: &Env) -> Vec<String> {
    let ops = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    ops["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_second_operation_on_the_same_node_is_refused_naming_the_first() {
    let env = cluster_env();
    // A dry run creates nothing, so it collides with nothing later.
    env.medic(&["start", "maint", "--set", "node=cp-1", "--dry-run"])
        .run()
        .code(0);
    env.medic(&["start", "maint", "--set", "node=cp-1", "--manual"])
        .run()
        .code(0);
    let first = operation_ids(&env)[0].clone();

    // The same node: by name over ssh, through kube, and through a role that includes it.
    for args in [
        &["start", "maint", "--set", "node=cp-1", "--manual"][..],
        &["start", "cordon", "--set", "node=cp-1", "--manual"][..],
        &["start", "control-planes", "--manual"][..],
    ] {
        env.medic(args)
            .run()
            .code(3)
            .stderr_contains(&format!("operation {first} (procedure maint"))
            .stderr_contains("also acts on node cp-1")
            .stderr_contains("--force");
    }
    assert_eq!(
        operation_ids(&env).len(),
        1,
        "a refused start creates nothing"
    );

    // Disjoint nodes: both start.
    env.medic(&["start", "maint", "--set", "node=w-1", "--manual"])
        .run()
        .code(0);
    env.medic(&["start", "cordon", "--set", "node=cp-2", "--manual"])
        .run()
        .code(0);
    assert_eq!(operation_ids(&env).len(), 3);

    // --force starts anyway, and the new operation's history says over what.
    env.medic(&[
        "start",
        "maint",
        "--set",
        "node=cp-1",
        "--manual",
        "--force",
    ])
    .run()
    .code(0)
    .stderr_contains(&format!("--force: starting although operation {first}"));
    let forced_op = operation_ids(&env)[3].clone();
    let hist = env
        .medic(&["plan", "history", "-o", "json", "--operation", &forced_op])
        .run()
        .code(0)
        .json();
    let forced: Vec<&serde_json::Value> = hist["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["forced"] == true)
        .collect();
    assert_eq!(forced.len(), 1, "{hist}");
    let detail = forced[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&first) && detail.contains("node cp-1"),
        "{detail}"
    );

    // A closed operation is not active: it collides with nothing.
    for id in [&first, &forced_op] {
        env.medic(&["plan", "complete", "--operation", id])
            .run()
            .code(0);
    }
    env.medic(&["start", "cordon", "--set", "node=cp-1", "--manual"])
        .run()
        .code(0);
}

#[test]
fn two_operations_changing_the_etcd_membership_collide_even_on_different_members() {
    let env = cluster_env();
    env.medic(&["start", "etcd-rm", "--set", "member=cp-1", "--manual"])
        .run()
        .code(0);
    let first = operation_ids(&env)[0].clone();
    env.medic(&["start", "etcd-rm", "--set", "member=cp-2", "--manual"])
        .run()
        .code(3)
        .stderr_contains(&format!("operation {first} (procedure etcd-rm"))
        .stderr_contains("also acts on the etcd membership");
    // Reading the membership is not changing it.
    env.medic(&["start", "maint", "--set", "node=w-1", "--manual"])
        .run()
        .code(0);
}

/// A slow phase whose command holds a secret; `idempotent` as given. The phase finishes at
/// once when $WORK/go exists (so a rerun does not wait).
fn interrupted_env(idempotent: bool) -> Env {
    let env = Env::new();
    env.procedure(
        "slow",
        &format!(
            r#"
name: slow
params: {{token: {{secret: true, required: true}}}}
phases:
  - id: apply
    idempotent: {idempotent}
    run: 'test -e "$WORK/go" && exit 0; echo {{{{ token }}}} > /dev/null; echo started >> "$WORK/log"; sleep 8'
    rollback: {{run: echo undone >> "$WORK/log"}}
  - id: after
    run: echo after >> "$WORK/log"
"#
        ),
    );
    env.medic(&["start", "slow", "--manual", "--set", "token=s3cr3t-value"])
        .run()
        .code(0);
    let child = env.medic(&["plan", "resume"]).spawn_quiet();
    let started = Instant::now();
    while !env.read("log").contains("started") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "phase never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(child.id());
    let mut child = child;
    let _ = child.wait();
    std::fs::write(env.file("go"), "").unwrap();
    env
}

#[test]
fn an_interrupted_phase_that_is_not_idempotent_says_what_it_may_have_done_and_how_on() {
    let env = interrupted_env(false);
    let out = env
        .medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/apply was interrupted (its executor is gone) and its action is not safe to repeat; it may have done:")
        .stdout_contains("echo '<secret:token>' > /dev/null")
        .stdout_contains("`medic plan resume --force`")
        .stdout_contains("`medic plan rollback --phase=/apply`")
        .stdout_contains("`medic plan set --phase=/apply --state=completed --reason TEXT`")
        .stdout_lacks("s3cr3t-value")
        .stdout_lacks("safe to repeat: `medic plan resume` runs it again");
    drop(out);
    let plan = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    let apply = &plan["phases"][0];
    assert_eq!(apply["state"], "interrupted");
    assert!(
        apply["may_have_done"][0]
            .as_str()
            .is_some_and(|l| l.contains("<secret:token>")),
        "{apply}"
    );
    // The hint is exact: resume alone is refused, resume --force runs it.
    env.medic(&["plan", "resume"]).run().code(3);
    env.medic(&["plan", "resume", "--force"]).run().code(0);
    assert_eq!(state_of(&env, "/after"), "completed");
}

#[test]
fn an_interrupted_idempotent_phase_says_resume() {
    let env = interrupted_env(true);
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/apply was interrupted (its executor is gone); its action is safe to repeat: `medic plan resume` runs it again")
        .stdout_lacks("--force");
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(state_of(&env, "/after"), "completed");
}

#[test]
fn an_interrupted_phase_done_by_hand_is_set_completed_and_the_rest_runs() {
    let env = interrupted_env(false);
    env.medic(&[
        "plan",
        "set",
        "--phase=/apply",
        "--state=completed",
        "--reason=checked: it finished",
    ])
    .run()
    .code(0)
    .stdout_contains("set to completed by hand (was interrupted)");
    let sets = manual_sets(&env);
    assert_eq!(sets[0]["from"], "in_progress", "{sets:?}");
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(log_lines(&env), ["started", "after"]);
}
