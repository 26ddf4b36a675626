//! The etcd maintenance actions against real etcd 3.4 members, through both transports:
//! move_leader, alarm_list, alarm_disarm, defragment, snapshot_status; removing the current
//! leader moves leadership to a healthy voter first; and the loader's refusals of malformed
//! maintenance operations.

mod common;

use common::etcd::EtcdCluster;
use common::{history, Env};

fn env_for(cluster: &EtcdCluster, inventory: Option<String>) -> Env {
    let env = Env::new();
    std::fs::write(
        env.file("cluster.yaml"),
        inventory.unwrap_or_else(|| cluster.inventory("")),
    )
    .unwrap();
    env
}

/// Raises a NOSPACE alarm on member `id` as etcd's own tests do (an alarm request from a client).
fn raise_nospace(endpoint: &str, id: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let mut options = etcd_client::AlarmOptions::new();
        options.with_member(id);
        c.alarm(
            etcd_client::AlarmAction::Activate,
            etcd_client::AlarmType::Nospace,
            Some(options),
        )
        .await
        .unwrap();
    });
}

fn member_id(cluster: &EtcdCluster, name: &str) -> u64 {
    let out = cluster.etcdctl(&["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["ID"].as_u64())
        .unwrap()
}

const MAINTENANCE: &str = r#"name: maint
params:
  to: {required: true}
  snapshot: {required: true}
phases:
  - id: alarms
    etcd: {alarm_list: {}}
    capture: {alarms_before: count}
  - id: disarm
    etcd: {alarm_disarm: {}}
  - id: alarms-after
    etcd: {alarm_list: {}}
    capture: {alarms_after: count}
  - id: defrag
    etcd: {defragment: {member: m1}}
    capture: {size_before: db_size_before, size_after: db_size_after}
  - id: leader
    etcd: {move_leader: {to: "{{ to }}"}}
  - id: snap
    etcd: {snapshot_status: {path: "{{ snapshot }}"}}
    capture: {snap_revision: revision, snap_hash: hash}
  - id: shown
    check: {that: "{{ alarms_before == 1 and alarms_after == 0 and size_after < size_before }}"}
"#;

/// Garbage in m1's database, so that a defragment has something to give back.
fn fill_and_compact(cluster: &EtcdCluster) {
    let value = "x".repeat(20_000);
    for i in 0..60 {
        let out = cluster.etcdctl(&["put", &format!("/junk/{i:03}"), &value]);
        assert!(out.status.success());
    }
    cluster.etcdctl(&["del", "--prefix", "/junk/"]);
    let out = cluster.etcdctl(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rev = v[0]["Status"]["header"]["revision"].as_u64().unwrap();
    let out = cluster.etcdctl(&["compact", &rev.to_string(), "--physical"]);
    assert!(out.status.success(), "{out:?}");
}

fn maintenance_actions(inventory: impl Fn(&EtcdCluster) -> Option<String>) {
    let cluster = EtcdCluster::start(3, false);
    let env = env_for(&cluster, inventory(&cluster));
    env.procedure("maint", MAINTENANCE);
    fill_and_compact(&cluster);
    let snapshot = env.file("snap.db");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.client_url(0)))
        .args(["snapshot", "save", snapshot.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status = cluster.etcdctl(&[
        "snapshot",
        "status",
        snapshot.to_str().unwrap(),
        "-w",
        "json",
    ]);
    let expected: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    // Last: a NOSPACE alarm refuses writes.
    raise_nospace(&cluster.client_url(1), member_id(&cluster, "m2"));
    let leader = cluster.leader();
    let to = cluster.members[(leader + 1) % 3].name.clone();
    let set_to = format!("to={to}");
    let set_snapshot = format!("snapshot={}", snapshot.display());
    // The dry-run shows what the snapshot holds and how old it is.
    env.medic(&[
        "start",
        "maint",
        "--set",
        &set_to,
        "--set",
        &set_snapshot,
        "--dry-run",
    ])
    .run()
    .code(0)
    .stdout_contains(&format!(
        "snapshot now: revision {}, {} keys",
        expected["revision"], expected["totalKey"]
    ))
    .stdout_contains(&format!("etcd move leader to {to}"));
    let out = env
        .medic(&[
            "-o",
            "json",
            "start",
            "maint",
            "--set",
            &set_to,
            "--set",
            &set_snapshot,
        ])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    let text = out.stdout.clone();
    assert!(text.contains("1 alarm(s) active: NOSPACE on"), "{text}");
    assert!(text.contains("1 alarm(s) disarmed"), "{text}");
    assert!(text.contains("defragmented m1"), "{text}");
    assert!(text.contains(&format!("to {to}")), "{text}");
    assert!(
        text.contains(&format!("revision {}", expected["revision"]))
            && text.contains(&format!("hash {}", expected["hash"])),
        "{text}"
    );
    assert_eq!(cluster.members[cluster.leader()].name, to, "leader moved");
    let alarms = cluster.etcdctl(&["alarm", "list"]);
    assert!(
        String::from_utf8_lossy(&alarms.stdout).trim().is_empty(),
        "alarms left: {alarms:?}"
    );
    // Moving leadership to the member that leads already changes nothing and says so (the
    // last check then fails: there was no alarm this time).
    env.medic(&["start", "maint", "--set", &set_to, "--set", &set_snapshot])
        .run()
        .code(1)
        .stdout_contains(&format!("{to} leads already"));
}

#[test]
fn maintenance_actions_work_directly() {
    maintenance_actions(|_| None);
}

#[test]
fn maintenance_actions_work_through_the_ssh_transport() {
    let sshd = common::sshd::Sshd::start(3);
    maintenance_actions(move |cluster| {
        let inventory = sshd
            .inventory(|_| "control-plane, etcd", "", "")
            .replace("name: n1,", "name: m1,")
            .replace("name: n2,", "name: m2,")
            .replace("name: n3,", "name: m3,");
        let endpoints: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
        Some(format!(
            "{inventory}etcd:\n  endpoints: [{}]\n  transport: ssh\n  via: m1\n",
            endpoints.join(", ")
        ))
    });
}

#[test]
fn removing_the_leader_moves_leadership_to_a_healthy_voter_first() {
    let cluster = EtcdCluster::start(3, false);
    let env = env_for(&cluster, None);
    let leader = cluster.members[cluster.leader()].name.clone();
    env.procedure(
        "rm",
        "name: rm\nparams:\n  name: {required: true}\nphases:\n  - id: remove\n    etcd:\n      member_remove: {name: \"{{ name }}\"}\n",
    );
    let set = format!("name={leader}");
    env.medic(&["start", "rm", "--set", &set, "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("if it leads, leadership moves to a healthy voter first")
        .stdout_contains(&format!(
            "leader now: {leader}; leadership moves to a healthy voter before the removal"
        ));
    // Two survivors of three keep quorum; the guard refuses clusters of two or fewer only.
    let out = env.medic(&["start", "rm", "--set", &set]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("moved leadership from {leader} to m")),
        "{}",
        out.stdout
    );
    // The phase log shows the new leader before the removal.
    let logs = env
        .medic(&["plan", "logs", "--phase=/remove"])
        .run()
        .code(0)
        .stdout;
    let moved = logs
        .find("leadership moved from")
        .unwrap_or_else(|| panic!("no move in the log:\n{logs}"));
    assert!(
        logs.find(&format!("removed {leader}"))
            .is_none_or(|r| r > moved),
        "{logs}"
    );
    // History records the move with the removal.
    let recorded = history(&env).iter().any(|e| {
        e.to_string()
            .contains(&format!("moved leadership from {leader}"))
    });
    assert!(recorded, "{:#?}", history(&env));
    let names = cluster.member_names();
    assert_eq!(names.len(), 2);
    assert!(!names.contains(&leader), "{names:?}");
    // etcd agrees: a survivor leads.
    let new_leader = cluster.members[cluster.leader()].name.clone();
    assert_ne!(new_leader, leader);
}

#[test]
fn malformed_maintenance_operations_are_refused_at_load_with_their_position() {
    let env = Env::new();
    let cases = [
        ("{move_leader: {}}", "etcd move_leader needs `to:`"),
        ("{defragment: {member: m1, node: m2}}", "node"),
        (
            "{snapshot_status: {}}",
            "etcd snapshot_status needs `path:`",
        ),
        (
            "{alarm_list: {}, alarm_disarm: {}}",
            "exactly one operation",
        ),
        ("{alarm_list: {member: m1}}", "member"),
        ("{defragment: }", "needs its settings"),
    ];
    for (i, (op, message)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        env.procedure(
            &name,
            &format!("name: {name}\nphases:\n  - id: a\n    etcd: {op}\n"),
        );
        let out = env
            .medic(&[
                "procedures",
                "lint",
                env.file(&format!("plans/{name}.yaml")).to_str().unwrap(),
            ])
            .run();
        assert_eq!(out.code, 2, "{op}: {out:?}");
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains(&format!("{name}.yaml:4:")), "{op}: {all}");
        assert!(all.contains(message), "{op}: {all}");
    }
}
