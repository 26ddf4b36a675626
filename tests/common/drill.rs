//! A drill cluster for end-to-end tests: `medic drill up` in a temp directory (real etcd
//! members, an sshd per node, the API emulator), medic pointed at its inventory, `medic drill down` on
//! drop.

use std::path::PathBuf;

use super::{Env, Output, Run};

pub struct DrillCluster {
    pub env: Env,
    pub dir: PathBuf,
    // One drill at a time per test binary: etcd elections need CPU on a 2-core machine.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl DrillCluster {
    pub fn up(args: &[&str]) -> DrillCluster {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let env = Env::new();
        let dir = env.path().join("drill");
        let mut full = vec!["drill", "up"];
        full.extend_from_slice(args);
        let drill = DrillCluster {
            env,
            dir,
            _turn: turn,
        };
        drill.medic(&full).run().code(0);
        drill
    }

    /// medic with the drill's inventory and directory.
    pub fn medic(&self, args: &[&str]) -> Run {
        self.env
            .medic(args)
            .env(
                "MEDIC_INVENTORY",
                self.dir.join("cluster.yaml").to_str().unwrap(),
            )
            .env("MEDIC_DRILL_DIR", self.dir.to_str().unwrap())
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.medic(&["-o", "json", "drill", "status"]).run().code(0);
        serde_json::from_str(&out.stdout).unwrap()
    }

    pub fn node_status(&self, name: &str) -> serde_json::Value {
        self.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no node {name} in the drill"))
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .args(args)
            .output()
            .expect("run kubectl");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `--set-file` arguments for the join secrets the drill wrote.
    pub fn join_secrets(&self, control_plane: bool) -> Vec<String> {
        let mut names = vec!["join_command", "token"];
        if control_plane {
            names.push("certificate_key");
        }
        names
            .iter()
            .flat_map(|n| {
                [
                    "--set-file".to_string(),
                    format!("{n}={}", self.dir.join(n.replace('_', "-")).display()),
                ]
            })
            .collect()
    }

    /// `medic drill provision NODE`; returns the new SSH host key's fingerprint it printed.
    pub fn provision(&self, node: &str) -> String {
        let out = self.medic(&["drill", "provision", node]).run().code(0);
        out.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("new SSH host key: "))
            .unwrap_or_else(|| panic!("no fingerprint in\n{}", out.stdout))
            .to_string()
    }

    /// The SHA256 fingerprint of a node's current host key, read from the drill's key file.
    pub fn host_key_fingerprint(&self, node: &str) -> String {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.dir.join("ssh").join(format!("host_key-{node}.pub")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Every node Ready at `version`, uncordoned; every etcd member healthy, `members` of them,
    /// named after the control-plane nodes, none twice.
    pub fn assert_healthy(&self, version: &str, members: usize) {
        let st = self.status();
        for n in st["nodes"].as_array().unwrap() {
            assert_eq!(n["node"], "Ready", "node not Ready: {n}");
            assert_eq!(n["version"], version, "node at another version: {n}");
            assert_eq!(n["unschedulable"], false, "node cordoned: {n}");
            assert_eq!(
                n["packages"]["kubelet"],
                format!("{}-1.1", version.trim_start_matches('v')),
                "kubelet package: {n}"
            );
        }
        let etcd: Vec<&serde_json::Value> = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !n["etcd"].is_null())
            .collect();
        assert_eq!(etcd.len(), members, "etcd members: {st}");
        for n in etcd {
            assert!(
                n["etcd"].as_str().unwrap().starts_with("healthy"),
                "unhealthy member: {n}"
            );
        }
        assert!(
            st["etcd_members"].as_array().unwrap().is_empty(),
            "members that are no drill node: {st}"
        );
        let list = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_endpoints().join(",")))
            .args(["member", "list", "-w", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
        let mut names: Vec<&str> = v["members"]
            .as_array()
            .map(|m| m.iter().map(|m| m["name"].as_str().unwrap_or("")).collect())
            .unwrap_or_default();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, members, "etcdctl member list: {v}");
        assert_eq!(names.len(), members, "a member appears twice: {v}");
    }

    pub fn etcd_endpoints(&self) -> Vec<String> {
        let inv = std::fs::read_to_string(self.dir.join("cluster.yaml")).unwrap();
        inv.lines()
            .filter_map(|l| l.trim().strip_prefix("- http://"))
            .map(|e| format!("http://{e}"))
            .collect()
    }
}

impl Drop for DrillCluster {
    fn drop(&mut self) {
        let _ = self.medic(&["drill", "down"]).run();
    }
}
