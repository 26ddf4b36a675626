//! `medic status` end to end on drill clusters: every probe passes on a healthy drill (text
//! snapshot), each break scenario is found by the right probe with its severity, finding and
//! remedy, a printed remedy repairs what it names, an unreachable node fails alone, and
//! `-o json`, `--only`, `--skip` and `--record`.

mod common;

use common::drill::DrillCluster;

/// `medic status -o json` (exit `code`) and its probes.
fn status_json(drill: &DrillCluster, args: &[&str], code: i32) -> serde_json::Value {
    let mut full = vec!["-o", "json", "status"];
    full.extend_from_slice(args);
    drill.medic(&full).run().no_panic().code(code).json()
}

fn probes(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["probes"].as_array().expect("probes")
}

/// The probe `name` (on `node`, when given).
fn probe<'a>(v: &'a serde_json::Value, name: &str, node: Option<&str>) -> &'a serde_json::Value {
    probes(v)
        .iter()
        .find(|p| p["name"] == name && node.is_none_or(|n| p["node"] == n))
        .unwrap_or_else(|| panic!("no probe {name} on {node:?} in {v:#}"))
}

fn failed(v: &serde_json::Value) -> Vec<(String, String)> {
    probes(v)
        .iter()
        .filter(|p| p["state"] == "fail")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_healthy_drill_passes_every_probe_and_only_and_skip_select_probes() {
    let drill = DrillCluster::up(&[]);
    let out = drill.medic(&["status"]).run().no_panic().code(0);
    insta::assert_snapshot!("healthy_drill", out.stdout);

    let v = status_json(&drill, &[], 0);
    assert_eq!(v["status"], "healthy");
    assert!(probes(&v).len() >= 60, "{v:#}");
    for p in probes(&v) {
        assert_eq!(p["state"], "pass", "{p:#}");
        for key in [
            "name",
            "component",
            "node",
            "severity",
            "finding",
            "data",
            "procedure",
            "phase",
        ] {
            assert!(p.get(key).is_some(), "probe lacks {key}: {p:#}");
        }
    }
    // The ports each node listens on, from its own `ss -ltnH`: the control plane's on
    // control-plane nodes only.
    for (node, ports) in [
        ("cp-1", serde_json::json!([22, 2379, 2380, 6443, 10250])),
        ("worker-1", serde_json::json!([22, 10250])),
    ] {
        let p = probe(&v, "node/port-6443", Some(node));
        assert_eq!(p["data"]["facts"]["ports"], ports, "{p:#}");
        assert_eq!(p["data"]["control_plane"], node == "cp-1", "{p:#}");
    }
    let kubelet = probe(&v, "node/kubelet-active", Some("worker-1"));
    assert_eq!(kubelet["severity"], "critical");
    assert_eq!(kubelet["data"]["facts"]["kubelet"], "active");
    assert_eq!(v["summary"]["nodes"], 5);
    assert_eq!(v["active_operations"], serde_json::json!([]));

    // --only a component, and one node.
    let v = status_json(&drill, &["--only", "node/", "--node", "cp-2"], 0);
    assert!(
        probes(&v)
            .iter()
            .all(|p| p["component"] == "node" && p["node"] == "cp-2"),
        "{v:#}"
    );
    assert_eq!(probes(&v).len(), 17);
    let v = status_json(&drill, &["--only", "etcd/leader"], 0);
    assert_eq!(probes(&v).len(), 1, "{v:#}");

    // A waived probe is shown as skipped and never counted, even when it fails.
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-2"])
        .run()
        .code(0);
    let v = status_json(
        &drill,
        &[
            "--skip",
            "node/kubelet-active",
            "--skip",
            "kubernetes/nodes-ready",
            "--skip",
            "node/port-10250",
        ],
        0,
    );
    assert_eq!(
        probe(&v, "node/kubelet-active", Some("worker-2"))["state"],
        "skipped"
    );
    assert_eq!(v["summary"]["skipped"], 11, "{v:#}");
    assert_eq!(v["status"], "healthy");
    status_json(&drill, &[], 1);
}

/// (scenario, node, probe, severity, words of the finding, words of the remedy)
const SCENARIOS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "clock-drift",
        "cp-2",
        "node/clock-offset-critical",
        "critical",
        "ms off this machine's (±",
        "Synchronise the clock of cp-2",
    ),
    (
        "disk-full",
        "cp-3",
        "node/disk-critical",
        "critical",
        "cp-3: / at 97% space",
        "Free space on cp-3",
    ),
    (
        "sysctl",
        "worker-2",
        "node/sysctl-ip-forward",
        "critical",
        "worker-2: net.ipv4.ip_forward = 0, want 1",
        "sysctl -w net.ipv4.ip_forward=1",
    ),
    (
        "module",
        "cp-1",
        "node/kernel-modules",
        "critical",
        "cp-1: loaded overlay; br_netfilter and overlay are needed",
        "modprobe br_netfilter overlay",
    ),
    (
        "runtime-down",
        "worker-1",
        "node/runtime-active",
        "critical",
        "worker-1: containerd is inactive",
        "systemctl start containerd",
    ),
    (
        "cert-expired",
        "worker-1",
        "node/cert-expired",
        "critical",
        "worker-1: expired: /etc/kubernetes/pki/apiserver-kubelet-client.crt (Jan  1 00:00:00 2025 GMT)",
        "On worker-1: kubeadm certs renew all",
    ),
    (
        "etcd-down",
        "cp-3",
        "etcd/member-health",
        "critical",
        "unhealthy: cp-3",
        "medic start etcd-remove-member --set node=cp-3 --dry-run",
    ),
];

#[test]
fn each_break_scenario_is_found_with_its_severity_finding_and_remedy() {
    let drill = DrillCluster::up(&[]);
    for (scenario, node, name, severity, finding, remedy) in SCENARIOS {
        drill
            .medic(&["drill", "break", scenario, node])
            .run()
            .code(0);
        let v = status_json(&drill, &[], 1);
        assert_eq!(v["status"], "degraded", "{scenario}: {v:#}");
        let on = name.starts_with("node/").then_some(*node);
        let p = probe(&v, name, on);
        assert_eq!(p["state"], "fail", "{scenario}: {p:#}");
        assert_eq!(p["severity"], *severity, "{scenario}: {p:#}");
        let text = p["finding"].as_str().unwrap();
        assert!(
            text.contains(finding),
            "{scenario}: finding {text:?} lacks {finding:?}"
        );
        let shown = serde_json::to_string(&p["remedy"]).unwrap();
        assert!(
            shown.contains(remedy),
            "{scenario}: remedy {shown} lacks {remedy:?}"
        );
        let out = drill.medic(&["status"]).run().code(1);
        assert!(out.stdout.starts_with("degraded: "), "{}", out.stdout);
        assert!(
            out.stdout.contains(remedy),
            "{scenario}: what to do lacks {remedy:?}\n{}",
            out.stdout
        );
    }
    // Each scenario fails only its own probes (and what follows from them): the etcd member
    // killed on cp-3 no longer listens there, and only there.
    let v = status_json(&drill, &["--only", "node/"], 1);
    let port = probe(&v, "node/port-2379", Some("cp-3"));
    assert_eq!(port["severity"], "critical");
    assert_eq!(
        port["finding"],
        "cp-3: nothing listens on port 2379 (etcd clients)"
    );
    let mut names = failed(&v);
    names.sort();
    assert_eq!(
        names,
        [
            ("node/cert-expired", "worker-1"),
            ("node/clock-offset-critical", "cp-2"),
            ("node/clock-offset-warning", "cp-2"),
            ("node/disk-critical", "cp-3"),
            ("node/disk-warning", "cp-3"),
            ("node/kernel-modules", "cp-1"),
            ("node/port-2379", "cp-3"),
            ("node/port-2380", "cp-3"),
            ("node/runtime-active", "worker-1"),
            ("node/sysctl-ip-forward", "worker-2"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn the_printed_remedy_for_a_stopped_kubelet_repairs_it() {
    let drill = DrillCluster::up(&[]);
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-1"])
        .run()
        .code(0);
    let v = status_json(&drill, &[], 1);
    let p = probe(&v, "node/kubelet-active", Some("worker-1"));
    assert_eq!(p["finding"], "worker-1: kubelet is inactive");
    // Its port goes with it, on that node only.
    let port = probe(&v, "node/port-10250", Some("worker-1"));
    assert_eq!(port["state"], "fail", "{port:#}");
    assert_eq!(port["remedy"]["procedure"], "restart-kubelet");
    assert_eq!(
        probe(&v, "node/port-10250", Some("worker-2"))["state"],
        "pass"
    );
    let command = p["remedy"]["command"].as_str().unwrap();
    assert_eq!(
        command,
        "medic start restart-kubelet --set node=worker-1 --dry-run"
    );
    drill
        .medic(&["status"])
        .run()
        .code(1)
        .stdout_contains(command);
    // Run exactly what was printed, without --dry-run.
    let words: Vec<&str> = command
        .split(' ')
        .skip(1)
        .filter(|w| *w != "--dry-run")
        .collect();
    drill.medic(&words).run().code(0);
    drill
        .medic(&["status"])
        .run()
        .code(0)
        .stdout_contains("healthy: ");
}

#[test]
fn an_unreachable_node_fails_alone_and_the_others_are_probed() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "1"]);
    let inventory = std::fs::read_to_string(drill.dir.join("cluster.yaml")).unwrap();
    let ghost = inventory.replace(
        "nodes:\n",
        "nodes:\n  - {name: ghost, address: 10.255.255.1, roles: [worker], ssh: {connect_timeout: 2s}}\n",
    );
    let path = drill.env.path().join("ghost.yaml");
    std::fs::write(&path, ghost).unwrap();
    let out = drill
        .medic(&["-o", "json", "status", "--only", "node/"])
        .env("MEDIC_INVENTORY", path.to_str().unwrap())
        .run()
        .no_panic()
        .code(1);
    let v = out.json();
    let reach = probe(&v, "node/reachable", Some("ghost"));
    assert_eq!(reach["state"], "fail", "{reach:#}");
    assert!(
        reach["finding"]
            .as_str()
            .unwrap()
            .starts_with("ghost: not reachable over SSH"),
        "{reach:#}"
    );
    assert_eq!(
        reach["remedy"]["command"],
        "medic start replace-worker-node --set node=ghost --dry-run"
    );
    assert_eq!(
        probe(&v, "node/kubelet-active", Some("ghost"))["state"],
        "unknown"
    );
    for node in ["cp-1", "worker-1"] {
        for p in probes(&v).iter().filter(|p| p["node"] == node) {
            assert_eq!(p["state"], "pass", "{p:#}");
        }
    }
    assert_eq!(
        failed(&v),
        [("node/reachable".to_string(), "ghost".to_string())]
    );

    // A lost control-plane node: its replacement is the remedy.
    drill
        .medic(&["drill", "break", "node-lost", "cp-1"])
        .run()
        .code(0);
    let v = status_json(&drill, &["--only", "node/"], 1);
    let reach = probe(&v, "node/reachable", Some("cp-1"));
    assert_eq!(reach["severity"], "critical");
    assert_eq!(
        reach["remedy"]["command"],
        "medic start replace-control-plane-node --set node=cp-1 --dry-run"
    );
}

#[test]
fn record_stores_a_cluster_health_operation_whose_history_shows_the_run() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "1"]);
    drill
        .medic(&["drill", "break", "sysctl", "worker-1"])
        .run()
        .code(0);
    let v = status_json(&drill, &["--record", "--skip", "node/swap-off"], 1);
    let id = v["recorded_operation"]
        .as_str()
        .expect("recorded operation")
        .to_string();
    assert_eq!(
        probe(&v, "node/sysctl-ip-forward", Some("worker-1"))["state"],
        "fail"
    );
    // The run went on after the failure: every other probe has a verdict, and passed.
    assert_eq!(failed(&v).len(), 1, "{v:#}");
    assert_eq!(v["summary"]["unknown"], 0, "{v:#}");
    assert_eq!(
        probe(&v, "node/clock-offset-warning", Some("worker-1"))["state"],
        "pass"
    );
    let ops = drill
        .medic(&["-o", "json", "operations"])
        .run()
        .code(0)
        .json();
    let op = &ops["operations"][0];
    assert_eq!(op["id"], id.as_str());
    assert_eq!(op["procedure"], "cluster-health");
    assert_eq!(op["state"], "failed", "{op:#}");
    let history = drill
        .medic(&["-o", "json", "plan", "history", "--operation", &id])
        .run()
        .code(0)
        .json();
    let text = history.to_string();
    assert!(text.contains("waived: node/swap-off"), "{text}");
    assert!(
        text.contains("worker-1: net.ipv4.ip_forward = 0, want 1"),
        "the failed probe's finding is in history: {text}"
    );
    // Without --record nothing is stored.
    status_json(&drill, &[], 1);
    let ops = drill
        .medic(&["-o", "json", "operations"])
        .run()
        .code(0)
        .json();
    assert_eq!(ops["operations"].as_array().unwrap().len(), 1);
}

#[test]
fn an_etcd_nospace_alarm_is_critical_and_its_remedy_clears_it() {
    let drill = DrillCluster::up(&["--control-planes", "3", "--workers", "0"]);
    drill
        .medic(&["drill", "break", "etcd-alarm", "cp-2"])
        .run()
        .code(0)
        .stdout_contains("etcd raised NOSPACE");
    // Raised by etcd itself, so it is there for etcdctl too.
    drill
        .medic(&["drill", "break", "etcd-alarm", "cp-1"])
        .run()
        .code(2);
    let v = status_json(&drill, &["--only", "etcd/"], 1);
    assert_eq!(v["status"], "degraded", "{v:#}");
    let p = probe(&v, "etcd/alarms", None);
    assert_eq!(p["state"], "fail", "{p:#}");
    assert_eq!(p["severity"], "critical");
    let finding = p["finding"].as_str().unwrap();
    assert!(
        finding.starts_with("active alarms: NOSPACE on member ")
            && finding.ends_with("(etcd refuses writes)"),
        "{finding}"
    );
    assert_eq!(failed(&v), [("etcd/alarms".to_string(), String::new())]);
    let command = p["remedy"]["command"].as_str().unwrap();
    assert_eq!(command, "medic start etcd-clear-alarms --dry-run");
    let words: Vec<&str> = command
        .split(' ')
        .skip(1)
        .filter(|w| *w != "--dry-run")
        .collect();
    drill.medic(&words).run().code(0);
    let v = status_json(&drill, &["--only", "etcd/"], 0);
    assert_eq!(probe(&v, "etcd/alarms", None)["state"], "pass");
}

/// Makes kube-system pod `pod` wait with `reason` (its container not Ready, restarted 7 times),
/// as its kubelet would report it.
fn make_pod_wait(drill: &DrillCluster, pod: &str, container: &str, reason: &str) {
    let patch = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": container, "image": "x", "imageID": "", "ready": false,
            "restartCount": 7, "state": {"waiting": {"reason": reason}}}],
    }});
    drill
        .kubectl(&[
            "-n",
            "kube-system",
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .code(0);
}

#[test]
fn control_plane_pods_coredns_and_crash_looping_system_pods_are_found() {
    let drill = DrillCluster::up(&["--control-planes", "2", "--workers", "1"]);
    let v = status_json(&drill, &["--only", "kubernetes/"], 0);
    for name in [
        "kubernetes/control-plane-pods",
        "kubernetes/coredns",
        "kubernetes/system-pods-waiting",
    ] {
        assert_eq!(probe(&v, name, None)["state"], "pass", "{v:#}");
    }

    make_pod_wait(
        &drill,
        "kube-scheduler-cp-2",
        "kube-scheduler",
        "CrashLoopBackOff",
    );
    drill
        .kubectl(&["-n", "kube-system", "delete", "pod", "kube-apiserver-cp-1"])
        .code(0);
    let v = status_json(&drill, &["--only", "kubernetes/"], 1);
    let p = probe(&v, "kubernetes/control-plane-pods", None);
    assert_eq!(p["state"], "fail", "{p:#}");
    assert_eq!(p["severity"], "critical");
    assert_eq!(
        p["finding"],
        "cp-1: kube-apiserver missing; cp-2: kube-scheduler CrashLoopBackOff"
    );
    let p = probe(&v, "kubernetes/system-pods-waiting", None);
    assert_eq!(p["state"], "fail", "{p:#}");
    assert_eq!(p["severity"], "warning");
    assert_eq!(
        p["finding"],
        "kube-scheduler-cp-2 on cp-2: CrashLoopBackOff (7 restarts)"
    );
    assert_eq!(probe(&v, "kubernetes/coredns", None)["state"], "pass");

    let dns = drill
        .kubectl(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-dns",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .code(0)
        .stdout;
    make_pod_wait(&drill, &dns, "coredns", "ImagePullBackOff");
    let v = status_json(&drill, &["--only", "kubernetes/coredns"], 1);
    let p = probe(&v, "kubernetes/coredns", None);
    assert_eq!(p["severity"], "critical");
    let finding = p["finding"].as_str().unwrap();
    assert!(
        finding.starts_with(&format!("{dns} on cp-")) && finding.ends_with(": ImagePullBackOff"),
        "{finding}"
    );
}

#[test]
fn kube_pods_needs_a_namespace_and_is_in_the_schema() {
    let env = common::Env::new();
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: a\n    kube: {pods: {}}\n  - id: b\n    kube: {pods: {namespace: x, label: y}}\n",
    );
    env.medic(&["start", "p", "--dry-run"])
        .run()
        .code(2)
        .stderr_contains("p.yaml:4:")
        .stderr_contains("kube pods needs `namespace:`")
        .stderr_contains("p.yaml:6:");
    let schema = env.medic(&["schema", "procedure"]).run().code(0).json();
    let text = schema.to_string();
    assert!(text.contains("\"KubePods\""), "{text}");
}

#[test]
fn a_certificate_expiring_on_one_node_is_a_warning_there_only() {
    let drill = DrillCluster::up(&["--control-planes", "2", "--workers", "0"]);
    drill
        .medic(&["drill", "break", "cert-expiring", "cp-2"])
        .run()
        .code(0)
        .stdout_contains("expires in 2 days");
    // Real certificates, in cp-2's own view only.
    let pki = drill.dir.join("nodes/cp-2/kubernetes/pki");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(pki.join("apiserver.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("kube-apiserver"));
    // A warning: healthy (exit 0) unless --strict.
    let v = status_json(&drill, &["--only", "node/"], 0);
    let p = probe(&v, "node/cert-expiring", Some("cp-2"));
    assert_eq!(p["state"], "fail", "{p:#}");
    assert_eq!(p["severity"], "warning");
    let finding = p["finding"].as_str().unwrap();
    assert!(
        finding.starts_with("cp-2: expiring within 30 days: /etc/kubernetes/pki/apiserver.crt (")
            && !finding.contains("ca.crt"),
        "{finding}"
    );
    let certs = p["data"]["facts"]["certs"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert_eq!(
        probe(&v, "node/cert-expired", Some("cp-2"))["state"],
        "pass"
    );
    assert_eq!(
        failed(&v),
        [("node/cert-expiring".to_string(), "cp-2".to_string())]
    );
    status_json(&drill, &["--only", "node/", "--strict"], 1);

    // An expired certificate, signed by cp-1's CA with `openssl ca` and dates in the past:
    // critical there, and not counted again as expiring.
    drill
        .medic(&["drill", "break", "cert-expired", "cp-1"])
        .run()
        .code(0)
        .stdout_contains("(expired)");
    let pki = drill.dir.join("nodes/cp-1/kubernetes/pki");
    let verify = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(pki.join("ca.crt"))
        .arg(pki.join("apiserver-kubelet-client.crt"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(said.contains("certificate has expired"), "{said}");
    let v = status_json(&drill, &["--only", "node/"], 1);
    assert_eq!(v["status"], "degraded");
    let p = probe(&v, "node/cert-expired", Some("cp-1"));
    assert_eq!(p["state"], "fail", "{p:#}");
    assert_eq!(p["severity"], "critical");
    assert_eq!(
        p["finding"],
        "cp-1: expired: /etc/kubernetes/pki/apiserver-kubelet-client.crt (Jan  1 00:00:00 2025 GMT)"
    );
    let mut names = failed(&v);
    names.sort();
    assert_eq!(
        names,
        [
            ("node/cert-expired", "cp-1"),
            ("node/cert-expiring", "cp-2")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    drill
        .medic(&["status", "--only", "node/"])
        .run()
        .code(1)
        .stdout_contains("On cp-1: kubeadm certs renew all");
    drill
        .medic(&["drill", "break", "cert-expired", "cp-1"])
        .run()
        .code(2)
        .stderr_contains("nothing was changed");
}
