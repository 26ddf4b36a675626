//! The drill's Kubernetes API emulator for tests: `medic drill apiserver` started on a free port
//! with a seed, a kubeconfig for it, and the stock `kubectl` pointed at it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
    child: Child,
}

impl ApiServer {
    pub fn start(seed: &str) -> ApiServer {
        let dir = tempfile::Builder::new()
            .prefix("medic-api-")
            .tempdir()
            .unwrap();
        let seed_path = dir.path().join("seed.yaml");
        std::fs::write(&seed_path, seed).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["drill", "apiserver", "--port", "0", "--seed"])
            .arg(&seed_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the API emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: drill, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\nusers: [{{name: drill, user: {{}}}}]\ncontexts: [{{name: drill, context: {{cluster: drill, user: drill}}}}]\ncurrent-context: drill\n"
            ),
        )
        .unwrap();
        ApiServer {
            dir,
            port,
            kubeconfig,
            child,
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let out = self.kubectl(&full);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Pod names on a node (`spec.nodeName`), sorted.
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        let v = self.json(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={node}"),
        ]);
        let mut names: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    pub fn inventory(&self) -> String {
        format!("name: drill\nnodes:\n  - {{name: n1, roles: [worker]}}\n  - {{name: n2, roles: [worker]}}\n  - {{name: n3, roles: [worker]}}\nkubernetes: {{kubeconfig: {}}}\n", self.kubeconfig.display())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(name: &str) -> String {
    format!("- kind: Node\n  metadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}}}}}\n  status:\n    conditions: [{{type: Ready, status: \"True\"}}]\n    nodeInfo: {{kubeletVersion: v1.30.2}}\n    addresses: [{{type: InternalIP, address: 10.0.0.{}}}]\n", name.trim_start_matches('n'))
}

fn rs_pod(name: &str, rs: &str, node: &str, empty_dir: bool) -> String {
    let volumes = if empty_dir {
        "\n    volumes: [{name: scratch, emptyDir: {}}]"
    } else {
        ""
    };
    format!("- kind: Pod\n  metadata:\n    name: {name}\n    namespace: default\n    labels: {{app: {rs}}}\n    ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {rs}, uid: rs-{rs}, controller: true}}]\n  spec:\n    nodeName: {node}\n    containers: [{{name: c, image: nginx}}]{volumes}\n")
}

/// Three nodes; on n1: `web` pods (ReplicaSet, budget allowing one disruption), a DaemonSet pod,
/// and whatever `extra` adds.
pub fn seed(web_pods: usize, min_available: usize, extra: &str) -> String {
    let mut s = String::new();
    for n in ["n1", "n2", "n3"] {
        s.push_str(&node(n));
    }
    s.push_str("- kind: ReplicaSet\n  metadata: {name: web, namespace: default}\n  spec: {replicas: 3, selector: {matchLabels: {app: web}}}\n");
    s.push_str("- kind: DaemonSet\n  metadata: {name: agent, namespace: kube-system}\n  spec: {selector: {matchLabels: {app: agent}}}\n");
    for i in 0..web_pods {
        s.push_str(&rs_pod(
            &format!("web-{i}"),
            "web",
            if i < 3 { "n1" } else { "n2" },
            false,
        ));
    }
    s.push_str(&format!("- kind: PodDisruptionBudget\n  metadata: {{name: web, namespace: default}}\n  spec: {{minAvailable: {min_available}, selector: {{matchLabels: {{app: web}}}}}}\n"));
    s.push_str("- kind: Pod\n  metadata:\n    name: agent-n1\n    namespace: kube-system\n    labels: {app: agent}\n    ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: ds-agent, controller: true}]\n  spec: {nodeName: n1, containers: [{name: c, image: agent}]}\n");
    s.push_str(extra);
    s
}

pub fn unmanaged_pod(node: &str) -> String {
    format!("- kind: Pod\n  metadata: {{name: debug-shell, namespace: default}}\n  spec: {{nodeName: {node}, containers: [{{name: c, image: busybox}}]}}\n")
}

pub fn empty_dir_pod(node: &str) -> String {
    rs_pod("cache-0", "cache", node, true)
        + "- kind: ReplicaSet\n  metadata: {name: cache, namespace: default}\n  spec: {replicas: 1, selector: {matchLabels: {app: cache}}}\n"
}
