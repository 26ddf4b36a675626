//! The drill cluster's lifecycle: `medic drill up | status | break | provision | down`.
//!
//! 1. `up` makes the drill directory (keys, shims, seed), starts one real etcd member per
//!    control-plane node, the API emulator seeded with the nodes and a workload, and one `sshd`
//!    listening on a loopback address per node whose sessions run through `bin/node-shell NODE`
//!    (so `systemctl`, `kubeadm`, `apt-get` on a node act on the drill; see [`super::node`]).
//!    It writes the inventory, kubeconfig, known_hosts and join secrets beside them.
//! 2. Everything the drill knows is in `drill.json`, read and written under an exclusive lock
//!    (`drill.lock`) so node commands running in parallel never lose each other's changes.
//! 3. `break` and `provision` change one node; `status` reads; `down` stops every process by
//!    the pid it recorded, checking the process start time so a reused pid is never signalled.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::store::process_start_ticks;
use crate::template::shell_quote;

/// Versions the drill's package repository offers (kubeadm, kubelet, kubectl), as pkgs.k8s.io
/// names them without the `-1.1` revision.
pub const AVAILABLE_VERSIONS: &[&str] = &[
    "1.29.6", "1.29.8", "1.30.0", "1.30.2", "1.30.4", "1.31.0", "1.31.2",
];
pub const PACKAGE_REVISION: &str = "1.1";
pub const DEFAULT_VERSION: &str = "1.30.2";
pub const PACKAGES: &[&str] = &["kubeadm", "kubelet", "kubectl"];

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Bad input or a drill in the wrong state (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something the drill runs failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str, e: impl std::fmt::Display) -> DrillError {
    DrillError::Failed(format!("{what}: {e}"))
}

/// A process the drill started: its pid and start time (so a reused pid is never mistaken).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Proc {
    fn of(pid: u32) -> Result<Proc, DrillError> {
        let start_ticks = process_start_ticks(pid)
            .ok_or_else(|| DrillError::Failed(format!("process {pid} exited right after start")))?;
        Ok(Proc { pid, start_ticks })
    }

    pub fn alive(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }

    fn signal(&self, sig: i32) {
        if self.alive() {
            // SAFETY: kill(2) with a pid we checked belongs to the process we started.
            unsafe {
                libc::kill(self.pid as i32, sig);
            }
        }
    }

    /// SIGTERM (or SIGKILL), then SIGKILL after `grace`; waits until the process is gone.
    pub fn stop(&self, grace: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let started = Instant::now();
        while self.alive() {
            if started.elapsed() > grace {
                self.signal(libc::SIGKILL);
            }
            if started.elapsed() > grace + Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn kill(&self) -> bool {
        self.signal(libc::SIGKILL);
        self.stop(Duration::ZERO)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillNode {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    pub control_plane: bool,
    /// Installed package versions (`1.30.2-1.1`).
    pub packages: BTreeMap<String, String>,
    /// Packages on hold (`apt-mark hold`).
    pub held: BTreeSet<String>,
    /// Whether the kubelet service runs, and which version runs (the binary at its last start).
    pub kubelet: bool,
    pub kubelet_version: Option<String>,
    /// Joined to the cluster (`/etc/kubernetes/kubelet.conf` exists, in kubeadm's terms).
    pub joined: bool,
    /// The node's etcd member process (control-plane nodes; kubeadm's static pod).
    pub etcd: Option<Proc>,
    /// `break node-lost`: powered off, unreachable.
    pub lost: bool,
    /// `break upgrade-fails`: the next package upgrade fails.
    pub upgrade_fails: bool,
}

impl DrillNode {
    pub fn package_version(&self, package: &str) -> Option<&str> {
        self.packages.get(package).map(|s| s.as_str())
    }

    /// `v1.30.2` for the installed kubelet package.
    pub fn installed_kubelet(&self) -> String {
        kubelet_version_of(self.package_version("kubelet").unwrap_or(DEFAULT_VERSION))
    }
}

/// `1.30.2-1.1` → `v1.30.2`.
pub fn kubelet_version_of(package_version: &str) -> String {
    format!(
        "v{}",
        package_version.split('-').next().unwrap_or(package_version)
    )
}

pub fn package_version(version: &str) -> String {
    format!("{version}-{PACKAGE_REVISION}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Drill {
    pub dir: PathBuf,
    /// The medic binary the node shims run.
    pub medic: PathBuf,
    pub ssh_port: u16,
    pub api_port: u16,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub token: String,
    pub ca_cert_hash: String,
    pub certificate_key: String,
    /// The control plane's version (`kubeadm upgrade apply`).
    pub cluster_version: String,
    pub sshd: Option<Proc>,
    pub apiserver: Option<Proc>,
    pub nodes: Vec<DrillNode>,
}

/// What `up` builds: node names and roles.
pub struct Layout {
    pub nodes: Vec<(String, Vec<String>)>,
    pub version: String,
}

impl Layout {
    pub fn sized(control_planes: usize, workers: usize, version: &str) -> Layout {
        let mut nodes = Vec::new();
        for i in 1..=control_planes {
            nodes.push((
                format!("cp-{i}"),
                vec!["control-plane".to_string(), "etcd".to_string()],
            ));
        }
        for i in 1..=workers {
            nodes.push((format!("worker-{i}"), vec!["worker".to_string()]));
        }
        Layout {
            nodes,
            version: version.to_string(),
        }
    }

    /// The nodes and roles of an existing inventory (addresses are the drill's own).
    pub fn like(inventory: &crate::inventory::Inventory, version: &str) -> Layout {
        Layout {
            nodes: inventory
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.roles.clone()))
                .collect(),
            version: version.to_string(),
        }
    }
}

fn is_control_plane(roles: &[String]) -> bool {
    roles
        .iter()
        .any(|r| r == "control-plane" || r == "master" || r == "etcd")
}

/// An exclusive lock on the drill directory, held while `drill.json` is read and changed.
pub struct DrillLock {
    _file: std::fs::File,
}

impl DrillLock {
    pub fn acquire(dir: &Path) -> Result<DrillLock, DrillError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("drill.lock"))
            .map_err(|e| failed(&format!("open {}/drill.lock", dir.display()), e))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(failed("lock the drill", std::io::Error::last_os_error()));
        }
        Ok(DrillLock { _file: file })
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), DrillError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| failed(&format!("write {}", path.display()), e))
}

impl Drill {
    pub fn state_path(dir: &Path) -> PathBuf {
        dir.join("drill.json")
    }

    /// Reads the drill in `dir` (take the lock first when changing it).
    pub fn load(dir: &Path) -> Result<Drill, DrillError> {
        let path = Self::state_path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DrillError::Usage(format!(
                    "no drill in {}; start one with `medic drill up` (or pass --dir)",
                    dir.display()
                ))
            } else {
                failed(&format!("read {}", path.display()), e)
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|e| failed(&format!("{} is damaged", path.display()), e))
    }

    pub fn save(&self) -> Result<(), DrillError> {
        let text = serde_json::to_string_pretty(self).expect("drill state serializes");
        write_file(&Self::state_path(&self.dir), &(text + "\n"), 0o600)
    }

    pub fn node(&self, name: &str) -> Result<&DrillNode, DrillError> {
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

    pub fn node_mut(&mut self, name: &str) -> Result<&mut DrillNode, DrillError> {
        self.node(name)?;
        Ok(self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("checked"))
    }

    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.join("nodes").join(name)
    }

    pub fn etcd_data_dir(&self, name: &str) -> PathBuf {
        self.node_dir(name).join("etcd")
    }

    pub fn peer_url(&self, node: &DrillNode) -> String {
        format!("http://{}:{}", node.address, self.etcd_peer_port)
    }

    pub fn client_url(&self, node: &DrillNode) -> String {
        format!("http://{}:{}", node.address, self.etcd_client_port)
    }

    pub fn api_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn join_command(&self) -> String {
        format!(
            "kubeadm join {} --discovery-token-ca-cert-hash {}",
            self.api_endpoint(),
            self.ca_cert_hash
        )
    }

    /// Client URLs of the etcd members whose process runs.
    pub fn live_etcd_endpoints(&self, except: Option<&str>) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| Some(n.name.as_str()) != except)
            .filter(|n| n.etcd.is_some_and(|p| p.alive()))
            .map(|n| self.client_url(n))
            .collect()
    }

    /// Starts `node`'s etcd member in its own session (it outlives the command that started
    /// it, e.g. a `kubeadm join` over SSH); its output goes to `nodes/NODE/etcd.log`.
    pub fn start_etcd(
        &mut self,
        name: &str,
        initial_cluster: &str,
        state: &str,
    ) -> Result<(), DrillError> {
        let node = self.node(name)?.clone();
        let data = self.etcd_data_dir(name);
        std::fs::create_dir_all(self.node_dir(name))
            .map_err(|e| failed("create the node directory", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node_dir(name).join("etcd.log"))
            .map_err(|e| failed("open the etcd log", e))?;
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-peer-urls")
            .arg(self.peer_url(&node))
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url(&node))
            .arg("--listen-client-urls")
            .arg(self.client_url(&node))
            .arg("--advertise-client-urls")
            .arg(self.client_url(&node))
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(format!("drill-{}", self.ssh_port))
            .args([
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
                "--log-level",
                "warn",
            ]);
        let pid = spawn_detached(&mut cmd, log)
            .map_err(|e| failed("start etcd (install etcd-server)", e))?;
        self.node_mut(name)?.etcd = Some(Proc::of(pid)?);
        Ok(())
    }

    pub fn stop_etcd(&mut self, name: &str) -> Result<(), DrillError> {
        if let Some(p) = self.node_mut(name)?.etcd.take() {
            p.kill();
        }
        Ok(())
    }

    /// The sshd configuration: one listen address per reachable node, each address's sessions
    /// forced through the node shell with the node's name.
    fn sshd_config(&self) -> String {
        let ssh = self.dir.join("ssh");
        let mut config = format!(
            "Port {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nMaxStartups 200:30:400\n\
             MaxSessions 200\nLogLevel ERROR\nSetEnv SHLVL=1\n",
            self.ssh_port,
            ssh.join("host_key").display(),
            ssh.join("sshd.pid").display(),
            ssh.join("authorized_keys").display(),
        );
        for n in self.nodes.iter().filter(|n| !n.lost) {
            config.push_str(&format!("ListenAddress {}\n", n.address));
        }
        for n in self.nodes.iter().filter(|n| !n.lost) {
            config.push_str(&format!(
                "Match LocalAddress {}\n    ForceCommand {} {}\n",
                n.address,
                shell_quote(&self.dir.join("bin/node-shell").display().to_string()),
                shell_quote(&n.name)
            ));
        }
        config
    }

    /// Rewrites the sshd configuration and has sshd reload it (it re-executes itself; open
    /// connections stay), then waits until the reachable addresses accept again.
    pub fn reload_sshd(&self) -> Result<(), DrillError> {
        write_file(
            &self.dir.join("ssh/sshd_config"),
            &self.sshd_config(),
            0o600,
        )?;
        if let Some(p) = self.sshd {
            p.signal(libc::SIGHUP);
        }
        std::thread::sleep(Duration::from_millis(100));
        self.wait_ssh()
    }

    fn wait_ssh(&self) -> Result<(), DrillError> {
        let started = Instant::now();
        for n in self.nodes.iter().filter(|n| !n.lost) {
            while std::net::TcpStream::connect((n.address.as_str(), self.ssh_port)).is_err() {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(DrillError::Failed(format!(
                        "sshd does not accept connections on {}:{}; see {}",
                        n.address,
                        self.ssh_port,
                        self.dir.join("ssh/sshd.log").display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

/// Spawns a process in its own session, stdin from /dev/null and output to `log`.
fn spawn_detached(cmd: &mut Command, log: std::fs::File) -> std::io::Result<u32> {
    let err = log.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // SAFETY: setsid is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // The child is left to run; dropping the handle does not kill it. It is reaped by
    // whoever outlives it (init once this process exits).
    drop(child);
    Ok(pid)
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(), DrillError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(what, e))?;
    if !out.status.success() {
        return Err(DrillError::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String, DrillError> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| failed("read /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A bootstrap token in kubeadm's format (`abcdef.0123456789abcdef`).
fn bootstrap_token() -> Result<String, DrillError> {
    let hex = random_hex(11)?;
    Ok(format!("{}.{}", &hex[..6], &hex[6..22]))
}

fn port_free_on(addresses: &[String], port: u16) -> bool {
    addresses
        .iter()
        .all(|a| std::net::TcpListener::bind((a.as_str(), port)).is_ok())
}

/// A port free on every address (and different from `taken`).
fn free_port(addresses: &[String], taken: &[u16]) -> Result<u16, DrillError> {
    for _ in 0..200 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed("find a free port", e))?
            .port();
        if !taken.contains(&port) && port_free_on(addresses, port) {
            return Ok(port);
        }
    }
    Err(DrillError::Failed(
        "could not find a free port on the drill's addresses".into(),
    ))
}

/// Loopback addresses for the nodes: a block of 127.x.y.z not used by another drill (whose
/// addresses would still be listening).
fn node_addresses(count: usize) -> Vec<String> {
    let base = 100 + (std::process::id() % 100) as usize;
    (0..count)
        .map(|i| format!("127.0.{}.{}", base, 11 + i))
        .collect()
}

pub struct UpOptions<'a> {
    pub layout: Layout,
    pub dir: &'a Path,
    pub progress: &'a dyn Fn(&str),
}

/// `medic drill up`.
pub async fn up(opts: UpOptions<'_>) -> Result<Drill, DrillError> {
    let layout = &opts.layout;
    if layout.nodes.is_empty() {
        return Err(DrillError::Usage("a drill needs at least one node".into()));
    }
    if !layout.nodes.iter().any(|(_, r)| is_control_plane(r)) {
        return Err(DrillError::Usage(
            "a drill needs at least one control-plane node (--control-planes 1 or more)".into(),
        ));
    }
    if layout.nodes.len() > 16 {
        return Err(DrillError::Usage(format!(
            "a drill has at most 16 nodes (one sshd serves them), not {}",
            layout.nodes.len()
        )));
    }
    if !AVAILABLE_VERSIONS.contains(&layout.version.as_str()) {
        return Err(DrillError::Usage(format!(
            "--version {} is not in the drill's package repository; use one of {}",
            layout.version,
            AVAILABLE_VERSIONS.join(", ")
        )));
    }
    if let Ok(existing) = Drill::load(opts.dir) {
        if existing.running().next().is_some() {
            return Err(DrillError::Usage(format!(
                "a drill is already running in {}; stop it with `medic drill down` first",
                opts.dir.display()
            )));
        }
    }
    let is_drill = Drill::state_path(opts.dir).exists();
    let empty = std::fs::read_dir(opts.dir).map_or(true, |mut d| d.next().is_none());
    if opts.dir.exists() && !is_drill && !empty {
        return Err(DrillError::Usage(format!(
            "{} exists and is not a drill directory; pass an empty or new --dir",
            opts.dir.display()
        )));
    }
    if is_drill {
        std::fs::remove_dir_all(opts.dir)
            .map_err(|e| failed(&format!("clear {}", opts.dir.display()), e))?;
    }
    std::fs::create_dir_all(opts.dir.join("ssh"))
        .and_then(|_| std::fs::create_dir_all(opts.dir.join("bin")))
        .and_then(|_| std::fs::create_dir_all(opts.dir.join("nodes")))
        .and_then(|_| std::fs::set_permissions(opts.dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| failed(&format!("create {}", opts.dir.display()), e))?;
    let dir = opts
        .dir
        .canonicalize()
        .map_err(|e| failed("resolve the drill directory", e))?;
    let addresses = node_addresses(layout.nodes.len());
    let ssh_port = free_port(&addresses, &[])?;
    let etcd_client_port = free_port(&addresses, &[ssh_port])?;
    let etcd_peer_port = free_port(&addresses, &[ssh_port, etcd_client_port])?;
    let pkg = package_version(&layout.version);
    let nodes = layout
        .nodes
        .iter()
        .zip(&addresses)
        .map(|((name, roles), address)| DrillNode {
            name: name.clone(),
            address: address.clone(),
            roles: roles.clone(),
            control_plane: is_control_plane(roles),
            packages: PACKAGES
                .iter()
                .map(|p| (p.to_string(), pkg.clone()))
                .collect(),
            held: PACKAGES.iter().map(|p| p.to_string()).collect(),
            kubelet: true,
            kubelet_version: Some(format!("v{}", layout.version)),
            joined: true,
            etcd: None,
            lost: false,
            upgrade_fails: false,
        })
        .collect();
    let medic = std::env::current_exe().map_err(|e| failed("find the medic binary", e))?;
    let mut drill = Drill {
        dir: dir.clone(),
        medic,
        ssh_port,
        api_port: 0,
        etcd_client_port,
        etcd_peer_port,
        token: bootstrap_token()?,
        ca_cert_hash: format!("sha256:{}", random_hex(32)?),
        certificate_key: random_hex(32)?,
        cluster_version: layout.version.clone(),
        sshd: None,
        apiserver: None,
        nodes,
    };
    // Saved first, so that `down` finds whatever starts below even if `up` fails half-way.
    drill.save()?;
    let result = bring_up(&mut drill, opts.progress).await;
    drill.save()?;
    if let Err(e) = result {
        (opts.progress)("start failed; stopping what was started");
        let _ = down(&dir);
        return Err(e);
    }
    Ok(drill)
}

async fn bring_up(drill: &mut Drill, progress: &dyn Fn(&str)) -> Result<(), DrillError> {
    let dir = drill.dir.clone();
    progress("generating SSH host and user keys");
    for key in ["host_key", "user_key"] {
        run_tool(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "medic-drill", "-f"])
                .arg(dir.join("ssh").join(key)),
            "ssh-keygen (install openssh-client)",
        )?;
    }
    std::fs::copy(
        dir.join("ssh/user_key.pub"),
        dir.join("ssh/authorized_keys"),
    )
    .map_err(|e| failed("write authorized_keys", e))?;
    write_shims(drill)?;

    let members: Vec<String> = drill
        .nodes
        .iter()
        .filter(|n| n.control_plane)
        .map(|n| format!("{}={}", n.name, drill.peer_url(n)))
        .collect();
    let initial = members.join(",");
    progress(&format!("starting {} etcd members", members.len()));
    let cps: Vec<String> = drill
        .nodes
        .iter()
        .filter(|n| n.control_plane)
        .map(|n| n.name.clone())
        .collect();
    for name in &cps {
        drill.start_etcd(name, &initial, "new")?;
    }
    drill.save()?;
    let endpoints = drill.live_etcd_endpoints(None);
    crate::drill::node::wait_etcd_healthy(&endpoints, Duration::from_secs(60))
        .await
        .map_err(|e| {
            DrillError::Failed(format!(
                "{e}; see {}",
                drill.node_dir(&cps[0]).join("etcd.log").display()
            ))
        })?;

    progress("starting the Kubernetes API emulator");
    write_file(
        &dir.join("seed.yaml"),
        &serde_json::to_string_pretty(&seed(drill)).expect("seed serializes"),
        0o600,
    )?;
    let log = std::fs::File::create(dir.join("apiserver.log"))
        .map_err(|e| failed("create apiserver.log", e))?;
    let pid = spawn_detached(
        Command::new(&drill.medic)
            .args(["drill", "apiserver", "--port", "0", "--seed"])
            .arg(dir.join("seed.yaml")),
        log,
    )
    .map_err(|e| failed("start the API emulator", e))?;
    drill.apiserver = Some(Proc::of(pid)?);
    drill.save()?;
    drill.api_port = wait_api_port(&dir.join("apiserver.log"), drill.apiserver.as_ref())?;
    write_file(
        &drill.kubeconfig(),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: drill\n  cluster:\n    server: http://{}\n\
             users:\n- name: drill-admin\n  user: {{}}\ncontexts:\n- name: drill\n  context:\n    cluster: drill\n    user: drill-admin\n\
             current-context: drill\n",
            drill.api_endpoint()
        ),
        0o600,
    )?;

    progress(&format!(
        "starting sshd for {} node addresses",
        drill.nodes.len()
    ));
    std::fs::create_dir_all("/run/sshd").ok();
    write_file(&dir.join("ssh/sshd_config"), &drill.sshd_config(), 0o600)?;
    let log = std::fs::File::create(dir.join("ssh/sshd.log"))
        .map_err(|e| failed("create sshd.log", e))?;
    let pid = spawn_detached(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("ssh/sshd_config")),
        log,
    )
    .map_err(|e| failed("start sshd (install openssh-server)", e))?;
    drill.sshd = Some(Proc::of(pid)?);
    drill.save()?;
    drill.wait_ssh()?;

    let host_pub = std::fs::read_to_string(dir.join("ssh/host_key.pub"))
        .map_err(|e| failed("read the host key", e))?;
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let known: Vec<String> = drill
        .nodes
        .iter()
        .map(|n| format!("[{}]:{} {}", n.address, drill.ssh_port, host_pub.join(" ")))
        .collect();
    write_file(&dir.join("known_hosts"), &(known.join("\n") + "\n"), 0o600)?;
    write_file(&dir.join("cluster.yaml"), &inventory_yaml(drill), 0o600)?;
    write_file(
        &dir.join("join-command"),
        &(drill.join_command() + "\n"),
        0o600,
    )?;
    write_file(&dir.join("token"), &(drill.token.clone() + "\n"), 0o600)?;
    write_file(
        &dir.join("certificate-key"),
        &(drill.certificate_key.clone() + "\n"),
        0o600,
    )?;
    Ok(())
}

fn wait_api_port(log: &Path, proc_: Option<&Proc>) -> Result<u16, DrillError> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .find(|l| l.contains("listening on"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
        {
            return Ok(port);
        }
        if started.elapsed() > Duration::from_secs(10) || proc_.is_some_and(|p| !p.alive()) {
            return Err(DrillError::Failed(format!(
                "the API emulator did not start: {}",
                text.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node shell (sshd's ForceCommand per node address) and the command shims it puts first
/// on PATH.
fn write_shims(drill: &Drill) -> Result<(), DrillError> {
    let dir = shell_quote(&drill.dir.display().to_string());
    let shell = format!(
        "#!/bin/sh\n\
         # The login shell of a medic drill node (sshd's ForceCommand): kubeadm-style commands\n\
         # (systemctl, kubeadm, apt-get, apt-mark, kubelet) act on the drill's state for node $1.\n\
         node=\"$1\"\n\
         dir={dir}\n\
         if [ -e \"$dir/nodes/$node/lost\" ]; then\n\
         \x20 echo \"medic drill: node $node is lost (medic drill break node-lost); it cannot be reached\" >&2\n\
         \x20 exit 255\n\
         fi\n\
         export MEDIC_DRILL_DIR=\"$dir\" MEDIC_DRILL_NODE=\"$node\" KUBECONFIG=\"$dir/kubeconfig\"\n\
         export PATH=\"$dir/bin:$PATH\"\n\
         if [ -z \"${{SSH_ORIGINAL_COMMAND:-}}\" ]; then exec /bin/sh -i; fi\n\
         exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n"
    );
    write_file(&drill.dir.join("bin/node-shell"), &shell, 0o755)?;
    let medic = shell_quote(&drill.medic.display().to_string());
    for tool in super::node::SHIMMED {
        write_file(
            &drill.dir.join("bin").join(tool),
            &format!("#!/bin/sh\nexec {medic} drill node {tool} \"$@\"\n"),
            0o755,
        )?;
    }
    Ok(())
}

fn inventory_yaml(drill: &Drill) -> String {
    let user = crate::store::username();
    let mut y = format!(
        "# The drill's inventory, written by `medic drill up`; the nodes are loopback addresses\n\
         # served by one sshd whose sessions act on the drill (see `medic drill status`).\n\
         name: drill\nssh:\n  user: {user}\n  port: {}\n  identity_file: {}\n  known_hosts: {}\n  connect_timeout: 5s\nnodes:\n",
        drill.ssh_port,
        drill.dir.join("ssh/user_key").display(),
        drill.dir.join("known_hosts").display(),
    );
    for n in &drill.nodes {
        y.push_str(&format!(
            "  - {{name: {}, address: {}, roles: [{}]}}\n",
            n.name,
            n.address,
            n.roles.join(", ")
        ));
    }
    y.push_str(&format!(
        "kubernetes:\n  kubeconfig: {}\netcd:\n  endpoints:\n",
        drill.kubeconfig().display()
    ));
    for n in drill.nodes.iter().filter(|n| n.control_plane) {
        y.push_str(&format!("    - {}\n", drill.client_url(n)));
    }
    y
}

/// The Node object the kubelet of `node` registers.
pub fn node_object(node: &DrillNode, ready: bool) -> serde_json::Value {
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
    });
    if node.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {},
        "status": node_status(node, ready),
    });
    if node.control_plane {
        obj["spec"]["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    obj
}

pub fn node_status(node: &DrillNode, ready: bool) -> serde_json::Value {
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    };
    json!({
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}],
        "nodeInfo": {"kubeletVersion": node.kubelet_version.clone().unwrap_or_else(|| node.installed_kubelet())},
        "addresses": [
            {"type": "InternalIP", "address": node.address},
            {"type": "Hostname", "address": node.name},
        ],
    })
}

/// The DaemonSet pod a joined node runs.
pub fn kube_proxy_pod(node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("kube-proxy-{node}"), "namespace": "kube-system",
            "labels": {"k8s-app": "kube-proxy"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy", "uid": "ds-kube-proxy", "controller": true}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy"}]},
    })
}

fn rs_pod(name: &str, rs: &str, app: &str, node: &str, empty_dir: bool) -> serde_json::Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default", "labels": {"app": app},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("rs-{rs}"), "controller": true}],
        },
        "spec": {"nodeName": node, "containers": [{"name": app, "image": format!("registry.example/{app}:1")}]},
    });
    if empty_dir {
        pod["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    }
    pod
}

/// The nodes and a realistic workload: a Deployment's pods (ReplicaSet `web-…`, under a budget),
/// a second Deployment, a cache pod with emptyDir, and kube-proxy (a DaemonSet) on every node.
fn seed(drill: &Drill) -> serde_json::Value {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-proxy", "namespace": "kube-system"}, "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}}}}),
    ];
    for n in &drill.nodes {
        objects.push(node_object(n, true));
        objects.push(kube_proxy_pod(&n.name));
    }
    let workers: Vec<&str> = drill
        .nodes
        .iter()
        .filter(|n| !n.control_plane)
        .map(|n| n.name.as_str())
        .collect();
    let hosts: Vec<&str> = if workers.is_empty() {
        drill.nodes.iter().map(|n| n.name.as_str()).collect()
    } else {
        workers
    };
    let deployments = [
        ("web", "web-7c9d6f8b4", 4usize),
        ("api", "api-5b8c7d9f6", 2),
    ];
    let mut k = 0;
    for (app, rs, replicas) in deployments {
        objects.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": rs, "namespace": "default", "labels": {"app": app}}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}}}));
        for i in 0..replicas {
            let suffix = &random_hex(3).unwrap_or_else(|_| format!("{i:06}"))[..5];
            objects.push(rs_pod(
                &format!("{rs}-{suffix}"),
                rs,
                app,
                hosts[k % hosts.len()],
                false,
            ));
            k += 1;
        }
    }
    objects.push(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "default"}, "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}}));
    objects.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "cache-6d5f4c8b7", "namespace": "default", "labels": {"app": "cache"}}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cache"}}}}));
    objects.push(rs_pod(
        "cache-6d5f4c8b7-x2k9p",
        "cache-6d5f4c8b7",
        "cache",
        hosts[hosts.len() - 1],
        true,
    ));
    serde_json::Value::Array(objects)
}

impl Drill {
    /// The processes of this drill that are alive: (what, process).
    pub fn running(&self) -> impl Iterator<Item = (String, Proc)> + '_ {
        let mut all: Vec<(String, Proc)> = Vec::new();
        if let Some(p) = self.sshd {
            all.push(("sshd".into(), p));
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

/// Processes whose command line mentions `dir` (what the drill started, found without its
/// records, e.g. an etcd a crashed command started but never recorded).
fn processes_mentioning(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Only the kinds of process the drill starts: an operator's medic run that merely
        // names a file in the drill directory (`--set-file token=…`) is left alone.
        let program = cmdline.split(' ').next().unwrap_or_default();
        let drill_kind = program.ends_with("etcd")
            || program.ends_with("sshd")
            || cmdline.contains(" drill apiserver ");
        if drill_kind && cmdline.contains(&needle) && process_start_ticks(pid).is_some() {
            out.push((pid, cmdline.trim().to_string()));
        }
    }
    out
}

/// `medic drill down`: stops every process the drill started and waits for its ports to be
/// free. Returns what it stopped.
pub fn down(dir: &Path) -> Result<Vec<String>, DrillError> {
    let _lock = DrillLock::acquire(dir)?;
    let mut drill = Drill::load(dir)?;
    let mut stopped = Vec::new();
    for (what, p) in drill.running().collect::<Vec<_>>() {
        let gone = if what == "sshd" || what == "apiserver" {
            p.stop(Duration::from_secs(3))
        } else {
            p.kill()
        };
        if !gone {
            return Err(DrillError::Failed(format!(
                "{what} (pid {}) did not stop",
                p.pid
            )));
        }
        stopped.push(format!("{what} (pid {})", p.pid));
    }
    for (pid, cmdline) in processes_mentioning(&drill.dir) {
        if let Ok(p) = Proc::of(pid) {
            p.kill();
            stopped.push(format!("stray process {pid}: {cmdline}"));
        }
    }
    drill.sshd = None;
    drill.apiserver = None;
    for n in &mut drill.nodes {
        n.etcd = None;
    }
    drill.save()?;
    let addresses: Vec<String> = drill.nodes.iter().map(|n| n.address.clone()).collect();
    let mut ports = vec![drill.ssh_port, drill.etcd_client_port, drill.etcd_peer_port];
    ports.retain(|p| *p != 0);
    let started = Instant::now();
    for port in ports {
        while !port_free_on(&addresses, port) {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(DrillError::Failed(format!(
                    "port {port} is still in use on a drill address after stopping"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(stopped)
}

/// `medic drill break SCENARIO NODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Kill the node's etcd member.
    EtcdDown,
    /// Stop the node's kubelet: the node turns NotReady.
    KubeletDown,
    /// All of it: etcd killed, node NotReady, and SSH to it refused.
    NodeLost,
    /// The next package upgrade on the node fails.
    UpgradeFails,
}

pub async fn break_node(dir: &Path, scenario: Scenario, name: &str) -> Result<String, DrillError> {
    let _lock = DrillLock::acquire(dir)?;
    let mut drill = Drill::load(dir)?;
    let node = drill.node(name)?.clone();
    if node.lost {
        return Err(DrillError::Usage(format!(
            "node {name} is already lost; `medic drill provision {name}` brings a fresh machine back"
        )));
    }
    // Breaking what is already broken changes nothing and is refused (exit 2), so a typo'd
    // node or a repeated command does not pass for a fresh failure.
    let already = match scenario {
        Scenario::EtcdDown if node.control_plane && node.joined => {
            (!node.etcd.is_some_and(|p| p.alive()))
                .then(|| format!("the etcd member of {name} is already down"))
        }
        Scenario::KubeletDown => {
            (!node.kubelet).then(|| format!("the kubelet on {name} is already stopped"))
        }
        Scenario::UpgradeFails => node
            .upgrade_fails
            .then(|| format!("the next package upgrade on {name} already fails")),
        _ => None,
    };
    if let Some(already) = already {
        return Err(DrillError::Usage(format!(
            "{already}; nothing was changed (`medic drill status` shows every node; `medic drill provision {name}` after `medic drill break node-lost {name}` gives it a fresh machine)"
        )));
    }
    match scenario {
        Scenario::EtcdDown => {
            if !node.etcd.is_some_and(|p| p.alive()) {
                return Err(DrillError::Usage(format!(
                    "node {name} runs no etcd member; etcd runs on {}",
                    drill
                        .nodes
                        .iter()
                        .filter(|n| n.etcd.is_some_and(|p| p.alive()))
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            drill.stop_etcd(name)?;
            drill.save()?;
            Ok(format!("killed the etcd member of {name}"))
        }
        Scenario::KubeletDown => {
            super::node::set_kubelet(&mut drill, name, false).await?;
            drill.save()?;
            Ok(format!(
                "stopped the kubelet on {name}; the node is NotReady"
            ))
        }
        Scenario::NodeLost => {
            if drill.nodes.iter().filter(|n| !n.lost).count() < 2 {
                return Err(DrillError::Usage(
                    "every other node is already lost; the drill keeps one reachable".into(),
                ));
            }
            drill.stop_etcd(name)?;
            super::node::set_kubelet(&mut drill, name, false).await?;
            drill.node_mut(name)?.lost = true;
            // The address stops listening below; this file makes the node shell refuse new
            // sessions on connections that were already open.
            std::fs::create_dir_all(drill.node_dir(name))
                .map_err(|e| failed("create the node directory", e))?;
            write_file(
                &drill.node_dir(name).join("lost"),
                "lost by `medic drill break node-lost`\n",
                0o600,
            )?;
            drill.save()?;
            drill.reload_sshd()?;
            Ok(format!(
                "{name} is lost: etcd member killed, node NotReady, SSH to {} refused",
                node.address
            ))
        }
        Scenario::UpgradeFails => {
            drill.node_mut(name)?.upgrade_fails = true;
            drill.save()?;
            Ok(format!("the next package upgrade on {name} will fail"))
        }
    }
}

/// `medic drill provision NODE`: a fresh machine at the node's address (reachable, packages at
/// the cluster's version, not joined, no etcd data), as an operator gets a replacement.
pub fn provision(dir: &Path, name: &str) -> Result<String, DrillError> {
    let _lock = DrillLock::acquire(dir)?;
    let mut drill = Drill::load(dir)?;
    // Provisioning wipes the machine (its etcd member, kubelet, packages): only for a node
    // that is lost, never a healthy one by mistake.
    if !drill.node(name)?.lost {
        return Err(DrillError::Usage(format!(
            "{name} is not lost; `medic drill break node-lost {name}` first (provision gives a lost node a fresh machine); nothing was changed"
        )));
    }
    drill.stop_etcd(name)?;
    let _ = std::fs::remove_dir_all(drill.node_dir(name));
    let pkg = package_version(&drill.cluster_version);
    let was_lost = {
        let n = drill.node_mut(name)?;
        let was_lost = n.lost;
        n.lost = false;
        n.joined = false;
        n.kubelet = false;
        n.kubelet_version = None;
        n.upgrade_fails = false;
        n.packages = PACKAGES
            .iter()
            .map(|p| (p.to_string(), pkg.clone()))
            .collect();
        n.held = PACKAGES.iter().map(|p| p.to_string()).collect();
        was_lost
    };
    drill.save()?;
    if was_lost {
        drill.reload_sshd()?;
    }
    Ok(format!(
        "{name} is a fresh machine: reachable over SSH, kubeadm/kubelet/kubectl {pkg} installed, not joined to the cluster"
    ))
}

/// One row of `medic drill status`.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    pub ssh: bool,
    pub kubelet: bool,
    pub joined: bool,
    /// Ready / NotReady / absent from the API.
    pub node: String,
    pub version: Option<String>,
    pub unschedulable: bool,
    pub etcd: Option<String>,
    pub packages: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub cluster_version: String,
    pub processes: Vec<(String, u32, bool)>,
    pub api: String,
    pub etcd_members: Vec<String>,
    pub nodes: Vec<NodeStatus>,
}

pub async fn status(dir: &Path) -> Result<Status, DrillError> {
    let drill = {
        let _lock = DrillLock::acquire(dir)?;
        Drill::load(dir)?
    };
    let mut processes = Vec::new();
    if let Some(p) = drill.sshd {
        processes.push(("sshd".to_string(), p.pid, p.alive()));
    }
    if let Some(p) = drill.apiserver {
        processes.push(("apiserver".to_string(), p.pid, p.alive()));
    }
    for n in &drill.nodes {
        if let Some(p) = n.etcd {
            processes.push((format!("etcd {}", n.name), p.pid, p.alive()));
        }
    }
    let api_nodes = super::node::api_nodes(&drill).await;
    let members = super::node::etcd_members(&drill).await;
    let mut nodes = Vec::new();
    for n in &drill.nodes {
        let ssh = !n.lost
            && std::net::TcpStream::connect_timeout(
                &format!("{}:{}", n.address, drill.ssh_port)
                    .parse()
                    .expect("socket address"),
                Duration::from_millis(500),
            )
            .is_ok();
        let obj = api_nodes.as_ref().ok().and_then(|m| m.get(&n.name));
        let node = match (&api_nodes, obj) {
            (Err(_), _) => "unknown".to_string(),
            (Ok(_), None) => "absent".to_string(),
            (Ok(_), Some(o)) => {
                let ready = o["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if ready { "Ready" } else { "NotReady" }.to_string()
            }
        };
        let etcd = match &members {
            Ok(list) => list.get(&n.name).cloned(),
            Err(_) => n.etcd.map(|p| {
                if p.alive() {
                    "running".to_string()
                } else {
                    "dead".to_string()
                }
            }),
        };
        nodes.push(NodeStatus {
            name: n.name.clone(),
            address: n.address.clone(),
            roles: n.roles.clone(),
            ssh,
            kubelet: n.kubelet,
            joined: n.joined,
            node,
            version: obj.and_then(|o| {
                o["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .map(String::from)
            }),
            unschedulable: obj.is_some_and(|o| o["spec"]["unschedulable"] == true),
            etcd,
            packages: n.packages.clone(),
        });
    }
    let mut etcd_members: Vec<String> = match &members {
        Ok(m) => m
            .iter()
            .filter(|(name, _)| !drill.nodes.iter().any(|n| &&n.name == name))
            .map(|(name, state)| format!("{name}: {state}"))
            .collect(),
        Err(e) => vec![format!("unavailable: {e}")],
    };
    etcd_members.sort();
    Ok(Status {
        dir: drill.dir.clone(),
        cluster_version: drill.cluster_version.clone(),
        processes,
        api: match &api_nodes {
            Ok(_) => format!("http://{}", drill.api_endpoint()),
            Err(e) => format!("unavailable: {e}"),
        },
        etcd_members,
        nodes,
    })
}
