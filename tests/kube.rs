//! The Kubernetes API emulator against the real `kubectl`, and medic's `kube` action against the
//! emulator: drains with budgets, DaemonSets, unmanaged and emptyDir pods, timeouts, SIGKILL
//! then resume, and the node-maintenance procedure end to end, including rollback.

mod common;

use std::time::{Duration, Instant};

use common::kube::{empty_dir_pod, seed, unmanaged_pod, ApiServer};
use common::{kill9, phase_states, Env};

fn env_for(api: &ApiServer) -> Env {
    let env = Env::new();
    std::fs::write(env.file("cluster.yaml"), api.inventory()).unwrap();
    env
}

fn drain_procedure(env: &Env, extra: &str) {
    env.procedure(
        "drain",
        &format!("name: drain\nparams:\n  node: {{required: true}}\nphases:\n  - id: drain\n    kube:\n      drain: {{node: \"{{{{ node }}}}\"{extra}}}\n"),
    );
}

fn unschedulable(api: &ApiServer, node: &str) -> bool {
    api.json(&["get", "node", node])["spec"]["unschedulable"] == true
}

#[test]
fn kubectl_gets_cordons_drains_and_deletes_against_the_emulator() {
    let api = ApiServer::start(&seed(5, 4, &empty_dir_pod("n1")));
    let out = api.kubectl(&["get", "nodes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("n1") && text.contains("Ready") && text.contains("v1.30.2"),
        "{text}"
    );
    assert!(api.kubectl(&["cordon", "n1"]).status.success());
    assert!(unschedulable(&api, "n1"));
    assert!(api.kubectl(&["uncordon", "n1"]).status.success());
    assert!(!unschedulable(&api, "n1"));
    let drain = api.kubectl(&[
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    assert!(
        drain.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&drain.stdout),
        String::from_utf8_lossy(&drain.stderr)
    );
    assert_eq!(
        api.pods_on("n1"),
        ["agent-n1"],
        "only the DaemonSet pod stays"
    );
    assert!(unschedulable(&api, "n1"));
    // The ReplicaSet's pods came back elsewhere; the budget is satisfied again.
    let web: usize = ["n2", "n3"]
        .iter()
        .map(|n| {
            api.pods_on(n)
                .iter()
                .filter(|p| p.starts_with("web-"))
                .count()
        })
        .sum();
    assert_eq!(web, 5);
    // What the cordons, the drain and the ReplicaSet did is in the events kubectl reads.
    let events = api.kubectl(&["get", "events", "-A"]);
    let text = String::from_utf8_lossy(&events.stdout);
    for shown in [
        "NodeNotSchedulable",
        "NodeSchedulable",
        "node/n1",
        "Killing",
        "SuccessfulCreate",
    ] {
        assert!(text.contains(shown), "{shown} not in\n{text}");
    }
    let about_n1 = api.json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=n1",
    ]);
    let reasons: Vec<&str> = about_n1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "NodeNotSchedulable",
            "NodeSchedulable",
            "NodeNotSchedulable"
        ]
    );
    assert!(api.kubectl(&["delete", "node", "n3"]).status.success());
    let names: Vec<String> = api.json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["n1", "n2"]);
}

#[test]
fn medic_drain_waits_for_the_budget_and_leaves_daemonset_pods() {
    let api = ApiServer::start(&seed(5, 4, ""));
    let env = env_for(&api);
    drain_procedure(&env, ", timeout: 60s");
    let out = env.medic(&["start", "drain", "--set", "node=n1"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("drained n1: 3 pod(s) moved, 1 left alone"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("blocked by disruption budgets; retrying"),
        "the budget blocked at first: {}",
        out.stdout
    );
    assert_eq!(api.pods_on("n1"), ["agent-n1"]);
    assert!(unschedulable(&api, "n1"));
    // Draining a drained node succeeds at once.
    env.medic(&["plan", "complete"]).run().code(0);
    env.medic(&["start", "drain", "--set", "node=n1"])
        .run()
        .code(0)
        .stdout_contains("nothing to move");
}

#[test]
fn unmanaged_and_emptydir_pods_are_refused_without_their_flags() {
    let api = ApiServer::start(&seed(3, 2, &(unmanaged_pod("n1") + &empty_dir_pod("n1"))));
    let env = env_for(&api);
    drain_procedure(&env, ", timeout: 30s");
    let out = env
        .medic(&["start", "drain", "--set", "node=n1"])
        .run()
        .code(1);
    assert!(
        out.stdout
            .contains("default/debug-shell: not managed by a controller"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("set force: true"), "{}", out.stdout);
    assert!(
        out.stdout.contains("default/cache-0: uses emptyDir"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("delete_emptydir_data: true"),
        "{}",
        out.stdout
    );
    assert!(
        api.pods_on("n1").contains(&"debug-shell".to_string()),
        "nothing was evicted"
    );
    env.medic(&["plan", "complete"]).run().code(0);
    drain_procedure(
        &env,
        ", timeout: 30s, force: true, delete_emptydir_data: true",
    );
    env.medic(&["start", "drain", "--set", "node=n1"])
        .run()
        .code(0);
    assert_eq!(api.pods_on("n1"), ["agent-n1"]);
}

#[test]
fn a_drain_timeout_names_the_blocking_budget_and_pods() {
    let api = ApiServer::start(&seed(3, 3, ""));
    let env = env_for(&api);
    drain_procedure(&env, ", timeout: 2s");
    let out = env
        .medic(&["start", "drain", "--set", "node=n1"])
        .run()
        .code(1);
    assert!(out.stdout.contains("drain of n1 timed out after 2s: eviction blocked by disruption budgets default/web (allows 0 disruptions)"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "default/web-0 (The disruption budget web needs 3 healthy pods and has 3 currently)"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn sigkill_mid_drain_then_resume_completes() {
    let api = ApiServer::start(&seed(6, 5, ""));
    let env = env_for(&api);
    drain_procedure(&env, ", timeout: 60s");
    env.medic(&["start", "drain", "--set", "node=n1", "--manual"])
        .run()
        .code(0);
    let child = env.medic(&["plan", "resume"]).spawn_quiet();
    let started = Instant::now();
    while api.pods_on("n1").len() == 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "drain never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(child.id());
    let _ = child.wait_with_output();
    assert_eq!(phase_states(&env)[0].1, "interrupted");
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(api.pods_on("n1"), ["agent-n1"]);
}

#[test]
fn the_export_reviewed_in_a_change_meeting_previews_the_drain_and_the_plan_table_does_not() {
    let api = ApiServer::start(&seed(5, 4, &unmanaged_pod("n2")));
    let env = env_for(&api);
    env.medic(&["start", "node-maintenance", "--set", "node=n1", "--manual"])
        .run()
        .code(0);
    env.medic(&["plan", "export", "--format", "markdown"])
        .run()
        .code(0)
        .stdout_contains("preview: evict   default/web-0 — managed by ReplicaSet web");
    // The plan table is drawn from the store alone: no network I/O, so no live preview.
    env.medic(&["plan"]).run().code(0).stdout_lacks("preview:");
    assert!(!unschedulable(&api, "n1"), "an export changed the cluster");
}

#[test]
fn node_maintenance_end_to_end_with_preview_pause_and_rollback() {
    let api = ApiServer::start(&seed(5, 4, &unmanaged_pod("n2")));
    let env = env_for(&api);
    // The dry-run previews the drain from the live cluster.
    env.medic(&["start", "node-maintenance", "--set", "node=n1", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("preview: evict   default/web-0 — managed by ReplicaSet web")
        .stdout_contains(
            "preview: skip    kube-system/agent-n1 — DaemonSet pod (agent); left alone",
        );
    env.medic(&[
        "start",
        "node-maintenance",
        "--set",
        "node=n1",
        "--set",
        "drain_timeout=60s",
    ])
    .run()
    .code(0)
    .stdout_contains("paused before /maintenance");
    assert!(unschedulable(&api, "n1"));
    assert_eq!(api.pods_on("n1"), ["agent-n1"]);
    // The kubelet goes down for the maintenance, and comes back.
    let patch = |status: &str| {
        let body = format!(
            "{{\"status\":{{\"conditions\":[{{\"type\":\"Ready\",\"status\":\"{status}\"}}]}}}}"
        );
        let out = api.kubectl(&[
            "patch",
            "node",
            "n1",
            "--subresource=status",
            "--type=merge",
            "-p",
            &body,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    patch("False");
    env.medic(&["plan", "execute", "--phase=/maintenance"])
        .run()
        .code(0);
    let resume = env.medic(&["plan", "resume"]).spawn_quiet();
    std::thread::sleep(Duration::from_millis(800));
    assert!(unschedulable(&api, "n1"), "uncordon waits for Ready");
    patch("True");
    let status = resume.wait_with_output().unwrap().status;
    assert!(status.success());
    assert!(!unschedulable(&api, "n1"));
    env.medic(&["plan", "complete"])
        .run()
        .code(0)
        .stdout_contains("completed");

    // Rolling back the cordon uncordons the node (after rolling back what depends on it).
    env.medic(&[
        "start",
        "node-maintenance",
        "--set",
        "node=n2",
        "--set",
        "drain_timeout=5s",
    ])
    .run()
    .code(1)
    .stdout_contains("debug-shell");
    assert!(unschedulable(&api, "n2"));
    env.medic(&["plan", "rollback", "--phase=/cordon"])
        .run()
        .code(3)
        .stdout_lacks("uncordoned")
        .stderr_contains("/drain (failed)");
    env.medic(&["plan", "rollback", "--phase=/"]).run().code(0);
    assert!(!unschedulable(&api, "n2"));
    env.medic(&["plan", "complete"])
        .run()
        .code(0)
        .stdout_contains("marked failed");
}

#[test]
fn labels_taints_node_info_and_delete_node() {
    let api = ApiServer::start(&seed(3, 2, ""));
    let env = env_for(&api);
    env.procedure(
        "lt",
        r#"
name: lt
phases:
  - id: label
    kube: {label: {node: n2, labels: {maintenance: planned}}}
  - id: taint
    kube: {taint: {node: n2, key: maintenance, value: "yes", effect: NoSchedule}}
  - id: info
    kube: {node_info: n2}
    capture: {version: kubelet_version, ready: ready}
  - id: check
    check: {that: "{{ version == 'v1.30.2' and ready }}", message: "got {{ version }}"}
"#,
    );
    env.medic(&["start", "lt"]).run().code(0);
    env.medic(&["plan", "complete"]).run().code(0);
    let n2 = api.json(&["get", "node", "n2"]);
    assert_eq!(n2["metadata"]["labels"]["maintenance"], "planned");
    assert_eq!(n2["spec"]["taints"][0]["key"], "maintenance");
    env.procedure(
        "undo",
        "name: undo\nphases:\n  - id: untaint\n    kube: {untaint: {node: n2, key: maintenance}}\n  - id: unlabel\n    kube: {unlabel: {node: n2, keys: [maintenance]}}\n  - id: delete\n    kube: {delete_node: n3}\n  - id: gone\n    kube: {wait_gone: {node: n3, timeout: 10s}}\n",
    );
    env.medic(&["start", "undo"]).run().code(0);
    let n2 = api.json(&["get", "node", "n2"]);
    assert!(
        n2["metadata"]["labels"].get("maintenance").is_none(),
        "{n2}"
    );
    assert!(
        n2["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()),
        "{n2}"
    );
    assert!(!api.kubectl(&["get", "node", "n3"]).status.success());
    // Deleting a node that is already gone succeeds and says so.
    env.medic(&["plan", "execute", "--phase=/delete"])
        .run()
        .code(0);
    env.procedure(
        "again",
        "name: again\nphases:\n  - id: delete\n    kube: {delete_node: n3}\n",
    );
    // Closed first: an active operation on n3 would make the next start collide.
    env.medic(&["plan", "complete"]).run().code(0);
    env.medic(&["start", "again"])
        .run()
        .code(0)
        .stdout_contains("already gone");
}

#[test]
fn wait_ready_with_a_version_waits_for_the_kubelet_version() {
    let api = ApiServer::start(&seed(3, 2, ""));
    let env = env_for(&api);
    env.procedure(
        "upgraded",
        r#"
name: upgraded
params:
  version: {default: v1.31.2}
phases:
  - id: ready
    kube: {wait_ready: {node: n1, timeout: 2s, version: "{{ version }}"}}
    capture: {seen: version}
  - id: check
    check: {that: "{{ seen == 'v1.31.2' }}"}
"#,
    );
    env.medic(&["start", "upgraded", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("kube wait until n1 is Ready with kubelet v1.31.2 (up to 2s)");
    // Ready, but still the old kubelet: the timeout says what it saw.
    env.medic(&["start", "upgraded"])
        .run()
        .code(1)
        .stdout_contains(
            "node n1 was not Ready with kubelet v1.31.2 after 2s; last seen: it was Ready with kubelet v1.30.2",
        );
    let out = api.kubectl(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"nodeInfo":{"kubeletVersion":"v1.31.2"}}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.medic(&["plan", "resume"])
        .run()
        .code(0)
        .stdout_contains("n1 is Ready (kubelet v1.31.2)");
}
