//! End to end on a drill cluster, through the CLI: each built-in procedure on the failure it
//! is for, an upgrade that fails and is rolled back from `/`, SIGKILL during a control-plane
//! replacement, and a `drill down` that leaves nothing behind.

mod common;

use std::time::Duration;

use common::drill::DrillCluster;
use common::{history, kill9, phase_states, state_of, Rng};

const OLD: &str = "v1.30.2";

fn summary_of(drill: &DrillCluster, id: &str) -> String {
    let out = drill.medic(&["plan", "-o", "json"]).run().code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .map(|p| match p["skipped"].as_str() {
            Some(reason) => format!("skipped: {reason}"),
            None => p["summary"].as_str().unwrap_or("").to_string(),
        })
        .unwrap_or_else(|| panic!("no phase {id}"))
}

fn drill_processes(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            if cmd.contains(&needle) && !zombie {
                out.push(cmd);
            }
        }
    }
    out
}

#[test]
fn drill_up_break_provision_and_down_leaves_no_process_or_port() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "2"]);
    let st = drill.status();
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes
        .iter()
        .all(|n| n["node"] == "Ready" && n["ssh"] == true));
    assert_eq!(drill.node_status("cp-1")["etcd"], "healthy, leader");
    // The stock kubectl sees the seeded workload: a budget, a DaemonSet pod per node.
    let pods = drill.kubectl(&["get", "pods", "-A", "-o", "wide"]).code(0);
    assert_eq!(
        pods.stdout.matches("kube-proxy-").count(),
        3,
        "{}",
        pods.stdout
    );
    drill
        .kubectl(&["get", "pdb", "web"])
        .code(0)
        .stdout_contains("web");

    // Provisioning wipes a machine: refused for a node that is not lost, which keeps its
    // etcd member and kubelet.
    drill
        .medic(&["drill", "provision", "cp-1"])
        .run()
        .code(2)
        .stderr_contains("cp-1 is not lost; `medic drill break node-lost cp-1` first");
    let cp1 = drill.node_status("cp-1");
    assert_eq!(cp1["node"], "Ready", "{cp1}");
    assert_eq!(cp1["etcd"], "healthy, leader", "{cp1}");
    assert_eq!(cp1["kubelet"], true, "{cp1}");

    // A node's commands act on the drill: kubelet-down turns it NotReady.
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-1"])
        .run()
        .code(0);
    assert_eq!(drill.node_status("worker-1")["node"], "NotReady");
    // Breaking what is already broken says so and changes nothing.
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-1"])
        .run()
        .code(2)
        .stderr_contains("the kubelet on worker-1 is already stopped; nothing was changed");
    drill
        .medic(&["drill", "break", "upgrade-fails", "worker-1"])
        .run()
        .code(0);
    drill
        .medic(&["drill", "break", "upgrade-fails", "worker-1"])
        .run()
        .code(2)
        .stderr_contains("already fails");
    drill
        .medic(&["drill", "provision", "worker-1"])
        .run()
        .code(2)
        .stderr_contains("worker-1 is not lost");
    drill
        .kubectl(&["get", "node", "worker-1"])
        .code(0)
        .stdout_contains("NotReady");

    // node-lost: SSH to its address is refused; provision brings a fresh, unjoined machine.
    let address = drill.node_status("worker-2")["address"]
        .as_str()
        .unwrap()
        .to_string();
    drill
        .medic(&["drill", "break", "node-lost", "worker-2"])
        .run()
        .code(0);
    let st = drill.node_status("worker-2");
    assert_eq!(st["ssh"], false);
    assert_eq!(st["node"], "NotReady");
    drill
        .medic(&["drill", "break", "node-lost", "worker-2"])
        .run()
        .code(2)
        .stderr_contains("worker-2 is already lost");
    drill
        .medic(&["drill", "break", "etcd-down", "worker-1"])
        .run()
        .code(2)
        .stderr_contains("runs no etcd member");
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-9"])
        .run()
        .code(2)
        .stderr_contains("did you mean `worker-1`?");
    drill
        .medic(&["drill", "provision", "worker-2"])
        .run()
        .code(0);
    let st = drill.node_status("worker-2");
    assert_eq!(st["ssh"], true);
    assert_eq!(st["joined"], false);

    let pids: Vec<u64> = drill.status()["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 5, "an sshd per node, apiserver, one etcd");
    let ports: Vec<u16> = {
        let inv = std::fs::read_to_string(drill.dir.join("cluster.yaml")).unwrap();
        let ssh_port = inv
            .lines()
            .find_map(|l| l.trim().strip_prefix("port: "))
            .unwrap()
            .parse()
            .unwrap();
        let etcd_port = drill.etcd_endpoints()[0]
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        vec![ssh_port, etcd_port]
    };
    let out = drill.medic(&["drill", "down"]).run().code(0);
    assert_eq!(out.stdout.matches("stopped ").count(), 5, "{}", out.stdout);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true),
            "process {pid} still runs after drill down"
        );
    }
    assert_eq!(drill_processes(&drill.dir), Vec::<String>::new());
    for port in ports {
        assert!(
            std::net::TcpListener::bind((address.as_str(), port)).is_ok(),
            "port {port} still in use on {address}"
        );
        assert!(std::net::TcpStream::connect((address.as_str(), port)).is_err());
    }
    drill
        .medic(&["drill", "status"])
        .run()
        .code(0)
        .stdout_contains("the drill is down");
}

#[test]
fn replace_control_plane_node_after_node_lost_restores_three_healthy_members() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "1"]);
    drill
        .medic(&["drill", "break", "node-lost", "cp-2"])
        .run()
        .code(0);
    let host_key = format!("replacement_host_key={}", drill.provision("cp-2"));
    let mut args = vec![
        "start",
        "replace-control-plane-node",
        "--set",
        "node=cp-2",
        "--set",
        &host_key,
    ];
    // Join material passed as parameters (the generated kind is in tests/join.rs).
    let secrets = drill.join_secrets(true);
    args.extend(secrets.iter().map(|s| s.as_str()));
    let token = drill.secret("token");
    let key = drill.secret("certificate-key");

    // The dry-run shows each command, the secrets as placeholders.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = drill.medic(&dry).run().code(0);
    for shown in [
        "set -- '<secret:join_command>'",
        "token='<secret:token>'",
        "key='<secret:certificate_key>'",
        "kubeadm join --config",
        "only when not join_command; decided at run time",
    ] {
        assert!(out.stdout.contains(shown), "`{shown}` in\n{}", out.stdout);
    }
    assert!(out.stdout.contains("<secret:token>"), "{}", out.stdout);
    assert!(!out.stdout.contains(&token) && !out.stdout.contains(&key));
    assert!(out.stdout.contains("/etcd/etcd/remove"), "{}", out.stdout);

    args.push("--yes");
    drill.medic(&args).run().code(0);
    assert!(phase_states(&drill.env)
        .iter()
        .all(|(_, s)| s == "completed"));
    drill.assert_healthy(OLD, 3);
    assert_eq!(drill.node_status("cp-2")["joined"], true);
    // Nothing that was recorded or logged shows a secret.
    let logs = drill.medic(&["plan", "logs"]).run().code(0);
    let hist = drill.medic(&["plan", "history"]).run().code(0);
    for text in [&logs.stdout, &hist.stdout] {
        assert!(!text.contains(&token) && !text.contains(&key));
    }
}

#[test]
fn replace_control_plane_node_refuses_a_node_that_is_ready() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "0"]);
    let mut args = vec!["start", "replace-control-plane-node", "--set", "node=cp-3"];
    let secrets = drill.join_secrets(true);
    args.extend(secrets.iter().map(|s| s.as_str()));
    drill
        .medic(&args)
        .run()
        .code(1)
        .stdout_contains("cp-3 is Ready");
    assert_eq!(state_of(&drill.env, "/etcd/etcd/remove"), "unstarted");
    drill.assert_healthy(OLD, 3);
}

#[test]
fn replace_worker_skips_the_drain_of_a_failed_node_and_drains_a_ready_one() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "2"]);
    let secrets = drill.join_secrets(false);
    let run = |node: &str| {
        let set = format!("node={node}");
        let mut args = vec![
            "start",
            "replace-worker-node",
            "--set",
            &set,
            "--set",
            "delete_emptydir_data=true",
            "--yes",
        ];
        args.extend(secrets.iter().map(|s| s.as_str()));
        drill.medic(&args).run().code(0);
    };
    // A failed worker: nothing to drain, and the plan says why.
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-1"])
        .run()
        .code(0);
    run("worker-1");
    let reason = summary_of(&drill, "/drain/drain");
    assert!(
        reason.contains("skipped") && reason.contains("not Ready"),
        "{reason}"
    );
    drill.medic(&["plan", "complete"]).run().code(0);

    // A Ready worker is drained first: its workload pods are evicted before it is replaced.
    let before = drill
        .kubectl(&["get", "pods", "-A", "-o", "wide"])
        .code(0)
        .stdout;
    assert!(before.contains("worker-2"));
    run("worker-2");
    assert_eq!(state_of(&drill.env, "/drain/drain"), "completed");
    let drained = summary_of(&drill, "/drain/drain");
    assert!(
        drained.starts_with("drained worker-2:") && !drained.contains(": 0 pod(s) moved"),
        "{drained}"
    );
    let pods = drill
        .kubectl(&["get", "pods", "-A", "-o", "wide"])
        .code(0)
        .stdout;
    for line in pods.lines().filter(|l| l.contains("worker-2")) {
        assert!(
            line.contains("kube-proxy"),
            "workload pod left on worker-2: {line}"
        );
    }
    drill.assert_healthy(OLD, 1);
}

fn upgrade_args(drill: &DrillCluster) -> Vec<String> {
    let _ = drill;
    [
        "start",
        "upgrade-kubernetes",
        "--set",
        "version=1.31.2",
        "--set",
        "from_version=1.30.2",
        "--set",
        "delete_emptydir_data=true",
        "--yes",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn upgrade_kubernetes_brings_every_node_to_the_new_version() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "2"]);
    let args = upgrade_args(&drill);
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    drill.medic(&refs).run().code(0);
    drill.assert_healthy("v1.31.2", 3);
    // The first control-plane node ran `kubeadm upgrade apply`, the others `upgrade node`.
    let logs = drill.medic(&["plan", "logs"]).run().code(0).stdout;
    assert_eq!(
        logs.matches("SUCCESS! Your cluster was upgraded").count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("The configuration for this node was successfully updated")
            .count(),
        4
    );
}

#[test]
fn upgrade_failing_on_the_second_node_rolls_back_from_the_root() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "1"]);
    drill
        .medic(&["drill", "break", "upgrade-fails", "cp-2"])
        .run()
        .code(0);
    let args = upgrade_args(&drill);
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    drill
        .medic(&refs)
        .run()
        .code(1)
        .stdout_contains("503  Service Unavailable");
    assert_eq!(
        state_of(&drill.env, "/control-plane/cp-1/uncordon"),
        "completed"
    );
    assert_eq!(
        state_of(&drill.env, "/control-plane/cp-2/packages"),
        "failed"
    );
    assert_eq!(drill.node_status("cp-1")["version"], "v1.31.2");
    assert_eq!(drill.node_status("cp-2")["unschedulable"], true);

    drill
        .medic(&[
            "plan",
            "rollback",
            "--phase=/",
            "--reason",
            "apt mirror down",
            "--yes",
        ])
        .run()
        .code(0);
    drill.assert_healthy(OLD, 3);
    drill.medic(&["plan", "complete"]).run().code(0);
    drill
        .medic(&["operations"])
        .run()
        .code(0)
        .stdout_contains("failed");

    // History: every step and its rollback, in reverse order, with who ran it.
    let hist = history(&drill.env);
    let rolled: Vec<String> = hist
        .iter()
        .filter(|e| e["to"] == "rolled_back")
        .map(|e| e["phase"].as_str().unwrap().to_string())
        .collect();
    let pos = |id: &str| {
        rolled
            .iter()
            .position(|p| p == id)
            .unwrap_or_else(|| panic!("{id} not rolled back: {rolled:?}"))
    };
    assert!(pos("/control-plane/cp-2/packages") < pos("/control-plane/cp-2/cordon"));
    assert!(pos("/control-plane/cp-2/cordon") < pos("/control-plane/cp-1/uncordon"));
    assert!(pos("/control-plane/cp-1/packages") < pos("/control-plane/cp-1/cordon"));
    for e in &hist {
        assert!(!e["user"].as_str().unwrap_or("").is_empty(), "{e}");
    }
    assert!(hist
        .iter()
        .any(|e| e["reason"].as_str() == Some("apt mirror down")));
}

#[test]
fn sigkill_during_replace_control_plane_node_then_resume_ends_with_three_healthy_members() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "0"]);
    drill
        .medic(&["drill", "break", "node-lost", "cp-3"])
        .run()
        .code(0);
    let host_key = format!("replacement_host_key={}", drill.provision("cp-3"));
    let mut args = vec![
        "start",
        "replace-control-plane-node",
        "--set",
        "node=cp-3",
        "--set",
        &host_key,
        "--manual",
    ];
    let secrets = drill.join_secrets(true);
    args.extend(secrets.iter().map(|s| s.as_str()));
    drill.medic(&args).run().code(0);
    let mut rng = Rng::from_env("drill crash test");
    let mut kills = 0;
    let mut finished = false;
    for round in 0..12 {
        let mut child = drill.medic(&["plan", "resume", "--yes"]).spawn_quiet();
        // The first kill comes early (the whole procedure takes a second or two), later ones
        // anywhere in the run.
        let window = if round == 0 { 400 } else { 2500 };
        std::thread::sleep(Duration::from_millis(50 + rng.next() % window));
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
        drill.medic(&["plan", "resume", "--yes"]).run().code(0);
    }
    eprintln!("killed medic {kills} times");
    assert!(
        kills >= 1,
        "medic was never killed; the test tested nothing"
    );
    assert!(phase_states(&drill.env)
        .iter()
        .all(|(_, s)| s == "completed"));
    drill.assert_healthy(OLD, 3);
}

#[test]
fn etcd_remove_member_and_node_maintenance_work_on_the_drill() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "1"]);
    drill
        .medic(&["drill", "break", "etcd-down", "cp-3"])
        .run()
        .code(0);
    drill
        .medic(&["start", "etcd-remove-member", "--set", "node=cp-3", "--yes"])
        .run()
        .code(0);
    let st = drill.status();
    let members: Vec<&str> = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["etcd"].as_str().is_some_and(|e| e.starts_with("healthy")))
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["cp-1", "cp-2"]);
    drill.medic(&["plan", "complete"]).run().code(0);

    drill
        .medic(&[
            "start",
            "node-maintenance",
            "--set",
            "node=worker-1",
            "--set",
            "delete_emptydir_data=true",
        ])
        .run()
        .code(0)
        .stdout_contains("Do the maintenance on worker-1");
    assert_eq!(drill.node_status("worker-1")["unschedulable"], true);
    // The maintenance: restart the kubelet over SSH as the operator would.
    drill
        .medic(&["plan", "execute", "--phase=/maintenance"])
        .run()
        .code(0);
    drill.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(drill.node_status("worker-1")["unschedulable"], false);
    assert_eq!(drill.node_status("worker-1")["node"], "Ready");
}

#[test]
fn an_etcd_member_down_after_approval_stops_the_removal_until_it_is_approved_again() {
    let drill = DrillCluster::up(&["--control-planes", "4", "--workers", "0"]);
    drill
        .medic(&[
            "start",
            "etcd-remove-member",
            "--set",
            "node=cp-4",
            "--manual",
        ])
        .run()
        .code(0);
    drill
        .medic(&["plan", "approve", "--reason", "CHG-7"])
        .run()
        .code(0);
    drill
        .medic(&["plan", "drift"])
        .run()
        .code(0)
        .stdout_contains("no drift");
    drill
        .medic(&["drill", "break", "etcd-down", "cp-3"])
        .run()
        .code(0);
    // The checks still pass (3 survivors, 2 healthy), the drift gate refuses the removal.
    drill
        .medic(&["plan", "resume", "--yes"])
        .run()
        .code(3)
        .stderr_contains("etcd: member cp-3 was healthy at approve, now unhealthy")
        .stderr_contains("medic plan drift");
    assert_eq!(state_of(&drill.env, "/etcd/remove"), "unstarted");
    drill
        .medic(&["plan", "drift"])
        .run()
        .code(1)
        .stdout_contains("etcd: member cp-3: healthy → unhealthy")
        .stdout_contains("etcd: member cp-4: healthy");
    // Approved again as it is now: the gate passes; the procedure's own checks decide.
    drill
        .medic(&[
            "plan",
            "approve",
            "--reason",
            "CHG-7, cp-3 is being repaired",
        ])
        .run()
        .code(0);
    let out = drill.medic(&["plan", "resume", "--yes"]).run();
    assert!(!out.stderr.contains("the cluster changed"), "{out:?}");
    assert_eq!(state_of(&drill.env, "/etcd/remove"), "completed", "{out:?}");
}
