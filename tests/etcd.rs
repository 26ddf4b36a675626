//! etcd membership phases against real etcd members: the etcd-remove-member procedure (plain,
//! TLS, and through SSH), the quorum guards and --force, learners, and SIGKILL then resume.

mod common;

use std::time::Duration;

use common::etcd::EtcdCluster;
use common::{kill9, phase_states, Env};

fn env_for(cluster: &EtcdCluster, extra: &str) -> Env {
    let env = Env::new();
    std::fs::write(env.file("cluster.yaml"), cluster.inventory(extra)).unwrap();
    env
}

fn remove_failed_member(tls: bool) {
    let mut cluster = EtcdCluster::start(3, tls);
    // Kill the leader: the removal must wait for the survivors to elect a new one.
    let dead = cluster.leader();
    let name = cluster.members[dead].name.clone();
    cluster.kill(dead);
    let survivors: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.name.clone())
        .filter(|n| *n != name)
        .collect();
    let env = env_for(&cluster, "");
    // The dry-run reads well in a change review: quorum before and after.
    env.medic(&["start", "etcd-remove-member", "--set", &format!("node={name}"), "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("etcd member remove (id <member_id: captured at run time>)")
        .stdout_contains("quorum: 3 members (quorum 2, tolerates 1 failure) → 2 members (quorum 2, tolerates 0 failures)");
    let snapshot = env.file("before.db");
    let out = env
        .medic(&[
            "start",
            "etcd-remove-member",
            "--set",
            &format!("node={name}"),
            "--set",
            &format!("snapshot={}", snapshot.display()),
            "--yes",
        ])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("removed {name}")),
        "{}",
        out.stdout
    );
    assert!(
        std::fs::metadata(&snapshot).unwrap().len() > 0,
        "snapshot saved"
    );
    assert_eq!(cluster.member_names(), survivors);
    let live: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    cluster.wait_healthy(live);
    assert!(phase_states(&env).iter().all(|(_, s)| s == "completed"));
}

#[test]
fn the_procedure_removes_a_killed_member_start_to_finish() {
    remove_failed_member(false);
}

#[test]
fn the_procedure_removes_a_killed_member_over_tls() {
    remove_failed_member(true);
}

#[test]
fn removing_a_second_member_while_one_is_down_is_refused() {
    let mut cluster = EtcdCluster::start(3, false);
    cluster.kill(1);
    let env = env_for(&cluster, "");
    env.procedure(
        "rm",
        "name: rm\nparams:\n  name: {required: true}\nphases:\n  - id: remove\n    etcd:\n      member_remove: {name: \"{{ name }}\"}\n",
    );
    let out = env
        .medic(&["start", "rm", "--set", "name=m3"])
        .run()
        .code(3);
    assert!(out.stdout.contains("changes the cluster from 3 members (quorum 2, tolerates 1 failure) to 2 members (quorum 2, tolerates 0 failures), but only 1 of the remaining members is started and healthy (m1); not healthy: m2"), "{}", out.stdout);
    assert_eq!(
        cluster.member_names(),
        ["m1", "m2", "m3"],
        "nothing was removed"
    );
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/remove failed: refused: removing m3");
}

#[test]
fn removing_from_a_two_member_cluster_is_refused_force_is_recorded_and_a_gone_member_is_fine() {
    let cluster = EtcdCluster::start(2, false);
    let env = env_for(&cluster, "");
    env.procedure(
        "rm",
        "name: rm\nparams:\n  name: {required: true}\nphases:\n  - id: remove\n    etcd:\n      member_remove: {name: \"{{ name }}\"}\n",
    );
    // Remove the live leader: etcd hands leadership over after the removal commits.
    let leader = cluster.members[cluster.leader()].name.clone();
    let other = if leader == "m1" { "m2" } else { "m1" };
    env.medic(&["start", "rm", "--set", &format!("name={leader}")])
        .run()
        .code(3)
        .stdout_contains("two or fewer");
    assert_eq!(cluster.member_names(), ["m1", "m2"]);
    // --force overrides the guard, and history records it with the reason.
    env.medic(&[
        "plan",
        "execute",
        "--phase=/remove",
        "--force",
        "--reason",
        "testing the guard",
    ])
    .run()
    .code(0);
    assert_eq!(cluster.member_names(), [other]);
    let forced = common::forced_entries(&env);
    assert_eq!(forced.len(), 1, "{:#?}", common::history(&env));
    assert!(forced[0]["detail"].as_str().unwrap().contains(&format!(
        "--force overrode a safety guard: removing {leader}"
    )));
    assert_eq!(forced[0]["reason"], "testing the guard");
    env.medic(&["plan", "complete"]).run().code(0);
    env.medic(&["start", "rm", "--set", "name=m9"])
        .run()
        .code(0)
        .stdout_contains("already gone");
    assert_eq!(cluster.member_names(), [other]);
}

#[test]
fn learner_add_start_promote_and_the_add_before_remove_trap() {
    let mut cluster = EtcdCluster::start(3, false);
    let env = env_for(&cluster, "");
    let slot = cluster.new_slot("m4");
    let peer = cluster.peer_url(slot);
    let other = cluster.new_slot("m5");
    let other_peer = cluster.peer_url(other);
    env.procedure(
        "grow",
        &format!(
            r#"
name: grow
phases:
  - id: add
    etcd:
      member_add: {{name: m4, peer_urls: ["{peer}"], learner: true}}
    capture: {{initial: initial_cluster}}
  - id: start
    pause: start m4 with --initial-cluster={{{{ initial }}}}
  - id: promote
    etcd:
      member_promote: {{name: m4, timeout: 60s}}
"#
        ),
    );
    env.procedure(
        "grow2",
        &format!("name: grow2\nphases:\n  - id: add\n    etcd:\n      member_add: {{name: m5, peer_urls: [\"{other_peer}\"], learner: true}}\n"),
    );
    env.medic(&["start", "grow"])
        .run()
        .code(0)
        .stdout_contains("paused before /start");
    let names = cluster.member_names();
    assert_eq!(names.len(), 4, "m4 added (not started yet): {names:?}");
    // Adding another member while m4 was added but not started: refused.
    let ops = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    let grow_id = ops["operations"][0]["id"].as_str().unwrap().to_string();
    // Two operations changing the membership collide at start...
    env.medic(&["start", "grow2"])
        .run()
        .code(3)
        .stderr_contains("also acts on the etcd membership");
    // ...and forced past that, the etcd guard still refuses the second add.
    env.medic(&["start", "grow2", "--force"])
        .run()
        .code(3)
        .stdout_contains("add-before-remove");
    // Re-adding m4 (same peer URL) is idempotent.
    env.medic(&["plan", "execute", "--phase=/add", "--operation", &grow_id])
        .run()
        .code(0);
    // Start m4 as the captured initial cluster says, then promote it.
    let json = env
        .medic(&[
            "plan",
            "export",
            "--format",
            "json",
            "--operation",
            &grow_id,
        ])
        .run()
        .code(0)
        .json();
    assert!(
        json.to_string().contains("m4="),
        "initial cluster captured: {json}"
    );
    cluster.start_joining(
        slot,
        &format!("{},m4={peer}", cluster.initial_cluster(Some(&[0, 1, 2]))),
    );
    env.medic(&["plan", "execute", "--phase=/start", "--operation", &grow_id])
        .run()
        .code(0);
    env.medic(&["plan", "resume", "--operation", &grow_id])
        .run()
        .code(0)
        .stdout_contains("promoted m4");
    let out = cluster.etcdctl(&["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m4 = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m4")
        .expect("m4 listed")
        .clone();
    assert_ne!(m4["isLearner"], true, "m4 was promoted: {m4}");
}

#[test]
fn the_procedure_works_through_the_ssh_transport() {
    let sshd = common::sshd::Sshd::start(3);
    let mut cluster = EtcdCluster::start(3, false);
    cluster.kill(2);
    let env = Env::new();
    // Nodes are reached over SSH (127.0.0.2..4); etcdctl runs on n1 against the endpoints.
    let mut inventory = sshd.inventory(|_| "control-plane, etcd", "", "");
    inventory = inventory
        .replace("name: n1,", "name: m1,")
        .replace("name: n2,", "name: m2,")
        .replace("name: n3,", "name: m3,");
    let endpoints: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
    inventory.push_str(&format!(
        "etcd:\n  endpoints: [{}]\n  transport: ssh\n  via: m1\n",
        endpoints.join(", ")
    ));
    std::fs::write(env.file("cluster.yaml"), inventory).unwrap();
    let out = env
        .medic(&["start", "etcd-remove-member", "--set", "node=m3", "--yes"])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("with etcdctl on m1 over ssh"),
        "{}",
        out.stdout
    );
    assert_eq!(cluster.member_names(), ["m1", "m2"]);
}

#[test]
fn sigkill_during_the_removal_then_resume_removes_the_member_exactly_once() {
    let mut cluster = EtcdCluster::start(3, false);
    cluster.kill(2);
    let env = env_for(&cluster, "");
    env.medic(&[
        "start",
        "etcd-remove-member",
        "--set",
        "node=m3",
        "--manual",
    ])
    .run()
    .code(0);
    let mut delay = 60u64;
    for _ in 0..8 {
        let child = env.medic(&["plan", "resume", "--yes"]).spawn_quiet();
        std::thread::sleep(Duration::from_millis(delay));
        kill9(child.id());
        let _ = child.wait_with_output();
        delay += 70;
        let states = phase_states(&env);
        if states.iter().all(|(_, s)| s == "completed") {
            break;
        }
    }
    env.medic(&["plan", "resume", "--yes"]).run().code(0);
    assert_eq!(cluster.member_names(), ["m1", "m2"]);
    let history = common::history(&env);
    let completes = history
        .iter()
        .filter(|e| e["phase"] == "/etcd/remove" && e["event"] == "complete")
        .count();
    assert_eq!(completes, 1, "{history:#?}");
}
