//! The drill's state: `drill.json` (every node, its packages, kubelet and etcd member, the
//! processes, the join secrets), read and written under an exclusive lock (`drill.lock`) so
//! node commands running in parallel never lose each other's changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{setup, DrillError, Failure};
use super::process::Proc;

/// Versions the drill's package repository offers (kubeadm, kubelet, kubectl), as pkgs.k8s.io
/// names them without the `-1.1` revision.
pub(crate) const AVAILABLE_VERSIONS: &[&str] = &[
    "1.29.6", "1.29.8", "1.30.0", "1.30.2", "1.30.4", "1.31.0", "1.31.2",
];
pub(crate) const PACKAGE_REVISION: &str = "1.1";
pub(crate) const DEFAULT_VERSION: &str = "1.30.2";
pub(crate) const PACKAGES: &[&str] = &["kubeadm", "kubelet", "kubectl"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DrillNode {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) roles: Vec<String>,
    pub(crate) control_plane: bool,
    /// Installed package versions (`1.30.2-1.1`).
    pub(crate) packages: BTreeMap<String, String>,
    /// Packages on hold (`apt-mark hold`).
    pub(crate) held: BTreeSet<String>,
    /// Whether the kubelet service runs, and which version runs (the binary at its last start).
    pub(crate) kubelet: bool,
    pub(crate) kubelet_version: Option<String>,
    /// Joined to the cluster (`/etc/kubernetes/kubelet.conf` exists, in kubeadm's terms).
    pub(crate) joined: bool,
    /// The node's etcd member process (control-plane nodes; kubeadm's static pod).
    pub(crate) etcd: Option<Proc>,
    /// The node's sshd (its own host key, on its address); none while the node is lost.
    #[serde(default)]
    pub(crate) sshd: Option<Proc>,
    /// `break node-lost`: powered off, unreachable.
    pub(crate) lost: bool,
    /// `break upgrade-fails`: the next package upgrade fails.
    pub(crate) upgrade_fails: bool,
}

impl DrillNode {
    pub(crate) fn package_version(&self, package: &str) -> Option<&str> {
        self.packages.get(package).map(|s| s.as_str())
    }

    /// `v1.30.2` for the installed kubelet package.
    pub(crate) fn installed_kubelet(&self) -> String {
        kubelet_version_of(self.package_version("kubelet").unwrap_or(DEFAULT_VERSION))
    }
}

/// `1.30.2-1.1` → `v1.30.2`.
pub(crate) fn kubelet_version_of(package_version: &str) -> String {
    format!(
        "v{}",
        package_version.split('-').next().unwrap_or(package_version)
    )
}

pub(crate) fn package_version(version: &str) -> String {
    format!("{version}-{PACKAGE_REVISION}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Drill {
    pub(crate) dir: PathBuf,
    /// The medic binary the node shims run.
    pub(crate) medic: PathBuf,
    pub(crate) ssh_port: u16,
    pub(crate) api_port: u16,
    pub(crate) etcd_client_port: u16,
    pub(crate) etcd_peer_port: u16,
    pub(crate) token: String,
    pub(crate) ca_cert_hash: String,
    pub(crate) certificate_key: String,
    /// The control plane's version (`kubeadm upgrade apply`).
    pub(crate) cluster_version: String,
    pub(crate) apiserver: Option<Proc>,
    pub(crate) nodes: Vec<DrillNode>,
}

pub(super) fn is_control_plane(roles: &[String]) -> bool {
    roles
        .iter()
        .any(|r| r == "control-plane" || r == "master" || r == "etcd")
}

/// An exclusive lock on the drill directory, held while `drill.json` is read and changed.
pub(crate) struct DrillLock {
    _file: std::fs::File,
}

impl DrillLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DrillLock, DrillError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("drill.lock"))
            .map_err(|source| Failure::OpenLock {
                dir: dir.to_path_buf(),
                source,
            })?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Failure::Lock {
                source: std::io::Error::last_os_error(),
            }
            .into());
        }
        Ok(DrillLock { _file: file })
    }

    /// [`DrillLock::acquire`] for async code: the lock waits for other node commands, on a
    /// blocking thread rather than the runtime's.
    pub(super) async fn acquire_async(dir: &Path) -> Result<DrillLock, DrillError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || DrillLock::acquire(&dir))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

pub(super) fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), DrillError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        Failure::WriteFile {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}

impl Drill {
    pub(crate) fn state_path(dir: &Path) -> PathBuf {
        dir.join("drill.json")
    }

    /// Reads the drill in `dir` (take the lock first when changing it).
    pub(crate) fn load(dir: &Path) -> Result<Drill, DrillError> {
        let path = Self::state_path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DrillError::Usage(format!(
                    "no drill in {}; start one with `medic drill up` (or pass --dir)",
                    dir.display()
                ))
            } else {
                Failure::ReadState {
                    path: path.clone(),
                    source: e,
                }
                .into()
            }
        })?;
        serde_json::from_str(&text).map_err(|source| Failure::DamagedState { path, source }.into())
    }

    pub(crate) fn save(&self) -> Result<(), DrillError> {
        let text = serde_json::to_string_pretty(self).expect("drill state serializes");
        write_file(&Self::state_path(&self.dir), &(text + "\n"), 0o600)
    }

    pub(crate) fn node(&self, name: &str) -> Result<&DrillNode, DrillError> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            let hint = crate::source::closest(name, names.iter().copied())
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            DrillError::Usage(format!(
                "the drill has no node `{name}`; {hint}its nodes are {}",
                names.join(", ")
            ))
        })
    }

    pub(crate) fn node_mut(&mut self, name: &str) -> Result<&mut DrillNode, DrillError> {
        self.node(name)?;
        Ok(self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("checked"))
    }

    pub(crate) fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.join("nodes").join(name)
    }

    pub(crate) fn etcd_data_dir(&self, name: &str) -> PathBuf {
        self.node_dir(name).join("etcd")
    }

    pub(crate) fn peer_url(&self, node: &DrillNode) -> String {
        format!("http://{}:{}", node.address, self.etcd_peer_port)
    }

    pub(crate) fn client_url(&self, node: &DrillNode) -> String {
        format!("http://{}:{}", node.address, self.etcd_client_port)
    }

    pub(crate) fn api_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub(crate) fn join_command(&self) -> String {
        format!(
            "kubeadm join {} --discovery-token-ca-cert-hash {}",
            self.api_endpoint(),
            self.ca_cert_hash
        )
    }

    /// Client URLs of the etcd members whose process runs.
    pub(crate) fn live_etcd_endpoints(&self, except: Option<&str>) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| Some(n.name.as_str()) != except)
            .filter(|n| n.etcd.is_some_and(|p| p.alive()))
            .map(|n| self.client_url(n))
            .collect()
    }
}

impl Drill {
    /// The processes of this drill that are alive: (what, process).
    pub(crate) fn running(&self) -> impl Iterator<Item = (String, Proc)> + '_ {
        let mut all: Vec<(String, Proc)> = Vec::new();
        for n in &self.nodes {
            if let Some(p) = n.sshd {
                all.push((format!("sshd {}", n.name), p));
            }
        }
        if let Some(p) = self.apiserver {
            all.push(("apiserver".into(), p));
        }
        for n in &self.nodes {
            if let Some(p) = n.etcd {
                all.push((format!("etcd {}", n.name), p));
            }
        }
        all.into_iter().filter(|(_, p)| p.alive())
    }
}

pub(super) fn random_hex(bytes: usize) -> Result<String, DrillError> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(setup("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A bootstrap token in kubeadm's format (`abcdef.0123456789abcdef`).
pub(super) fn bootstrap_token() -> Result<String, DrillError> {
    let hex = random_hex(11)?;
    Ok(format!("{}.{}", &hex[..6], &hex[6..22]))
}
