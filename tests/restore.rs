//! `etcd-restore-snapshot` end to end on drill clusters after `medic drill break quorum-lost`:
//! three healthy members at the end, a key written before the snapshot is there and one written
//! after it is not; and SIGKILL of medic at random moments then `plan resume` (seeded: replay
//! with `MEDIC_CRASH_SEED`) still ends with three healthy members, none twice.

mod common;

use std::time::Duration;

use common::drill::DrillCluster;
use common::{kill9, phase_states, Rng};

const VERSION: &str = "v1.30.2";

fn etcdctl(drill: &DrillCluster, args: &[&str]) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", drill.etcd_endpoints().join(",")))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// A drill whose etcd lost quorum (cp-1 survives), with a snapshot taken between two keys.
fn drill_with_lost_quorum() -> (DrillCluster, String) {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "0"]);
    assert!(etcdctl(&drill, &["put", "/before", "kept"])
        .status
        .success());
    let snapshot = drill.env.file("etcd.db").display().to_string();
    drill
        .medic(&["drill", "snapshot", &snapshot])
        .run()
        .code(0)
        .stdout_contains("saved an etcd snapshot");
    assert!(etcdctl(&drill, &["put", "/after", "lost"]).status.success());
    drill
        .medic(&["drill", "break", "quorum-lost", "cp-1"])
        .run()
        .code(0)
        .stdout_contains("etcd quorum lost");
    (drill, snapshot)
}

fn assert_restored(drill: &DrillCluster) {
    drill.assert_healthy(VERSION, 3);
    let get = |key: &str| {
        String::from_utf8_lossy(&etcdctl(drill, &["get", key, "--print-value-only"]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        get("/before"),
        "kept",
        "the key written before the snapshot"
    );
    assert_eq!(
        get("/after"),
        "",
        "the key written after the snapshot is gone"
    );
    let list = etcdctl(drill, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["isLearner"] != true),
        "a learner is left: {v}"
    );
}

#[test]
fn quorum_lost_then_restore_from_the_snapshot_ends_with_three_healthy_members() {
    let (drill, snapshot) = drill_with_lost_quorum();
    let set_snapshot = format!("snapshot={snapshot}");
    let args = [
        "start",
        "etcd-restore-snapshot",
        "--set",
        &set_snapshot,
        "--set",
        "restore_node=cp-1",
        "--yes",
    ];
    // The dry-run says what the snapshot holds and which phases cannot be undone.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    drill
        .medic(&dry)
        .run()
        .code(0)
        .stdout_contains("snapshot now: revision")
        .stdout_contains("a restore loses every change made after it")
        .stdout_contains("/restore/data — IRREVERSIBLE")
        .stdout_contains("/rejoin/cp-3/wipe — IRREVERSIBLE");
    // Quorum is lost: the checks pass and the restore runs to the end.
    let out = drill.medic(&args).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(phase_states(&drill.env)
        .iter()
        .all(|(_, s)| s == "completed"));
    assert_restored(&drill);
    // Quorum is there now: a second restore is refused by its checks, before anything stops
    // (the first is closed, or the second would be refused as colliding with it).
    drill.medic(&["plan", "complete"]).run().code(0);
    let out = drill.medic(&args).run();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("3 of 3 members answer"),
        "{}",
        out.stdout
    );
    drill.assert_healthy(VERSION, 3);
}

#[test]
fn sigkill_during_the_restore_then_resume_ends_with_three_healthy_members() {
    let (drill, snapshot) = drill_with_lost_quorum();
    let set_snapshot = format!("snapshot={snapshot}");
    drill
        .medic(&[
            "start",
            "etcd-restore-snapshot",
            "--set",
            &set_snapshot,
            "--set",
            "restore_node=cp-1",
            "--manual",
        ])
        .run()
        .code(0);
    let mut rng = Rng::from_env("restore crash test");
    let mut kills = 0;
    let mut finished = false;
    for round in 0..14 {
        let mut child = drill.medic(&["plan", "resume", "--yes"]).spawn_quiet();
        // The whole restore takes 15-20 s (each learner takes a few to join): kills land
        // early in the first rounds and anywhere later.
        let window = if round < 2 { 1500 } else { 6000 };
        std::thread::sleep(Duration::from_millis(100 + rng.next() % window));
        if let Some(status) = child.try_wait().unwrap() {
            if status.success() {
                finished = true;
                break;
            }
            let plan = drill.medic(&["plan"]).run().stdout;
            let logs = drill.medic(&["plan", "logs"]).run().stdout;
            panic!("resume failed on its own: {status}\n{plan}\n{logs}");
        }
        kill9(child.id());
        child.wait().unwrap();
        kills += 1;
    }
    if !finished {
        let out = drill.medic(&["plan", "resume", "--yes"]).run();
        assert_eq!(out.code, 0, "{out:?}");
    }
    eprintln!("killed medic {kills} times");
    assert!(
        kills >= 1,
        "medic was never killed; the test tested nothing"
    );
    assert!(phase_states(&drill.env)
        .iter()
        .all(|(_, s)| s == "completed"));
    assert_restored(&drill);
}
