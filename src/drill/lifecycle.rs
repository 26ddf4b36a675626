//! The drill cluster's lifecycle: `medic drill up | status | down`.
//!
//! 1. `up` makes the drill directory (keys, shims, seed), starts one real etcd member per
//!    control-plane node, the API emulator seeded with the nodes and a workload, and an `sshd`
//!    per node (its own host key) on a loopback address, whose sessions run through `bin/node-shell NODE`
//!    (so `systemctl`, `kubeadm`, `apt-get` on a node act on the drill; see [`super::node`]).
//!    It writes the inventory, kubeconfig, known_hosts and join secrets beside them.
//! 2. `status` reads `drill.json` and asks the API and etcd what they see.
//! 3. `down` stops every process by the pid it recorded, checking the process start time so a
//!    reused pid is never signalled.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::{setup, DrillError, Failure};
use super::etcd::{etcd_members, wait_etcd_healthy};
use super::kubelet::api_nodes;
use super::node::write_shims;
use super::process::{
    free_port, node_addresses, port_free_on, processes_mentioning, run_tool, spawn_detached, Proc,
};
use super::seed::seed;
use super::sshd::accepts;
use super::state::{
    bootstrap_token, is_control_plane, package_version, random_hex, write_file, Drill, DrillLock,
    DrillNode, AVAILABLE_VERSIONS, PACKAGES,
};

/// What `up` builds: node names and roles.
pub(crate) struct Layout {
    pub(crate) nodes: Vec<(String, Vec<String>)>,
    pub(crate) version: String,
}

impl Layout {
    pub(crate) fn sized(control_planes: usize, workers: usize, version: &str) -> Layout {
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
    pub(crate) fn like(inventory: &crate::inventory::Inventory, version: &str) -> Layout {
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

pub(crate) struct UpOptions<'a> {
    pub(crate) layout: Layout,
    pub(crate) dir: &'a Path,
    pub(crate) progress: &'a dyn Fn(&str),
}

/// `medic drill up`.
pub(crate) async fn up(opts: UpOptions<'_>) -> Result<Drill, DrillError> {
    let layout = &opts.layout;
    check_layout(layout)?;
    if let Ok(existing) = Drill::load(opts.dir) {
        if existing.running().next().is_some() {
            return Err(DrillError::Usage(format!(
                "a drill is already running in {}; stop it with `medic drill down` first",
                opts.dir.display()
            )));
        }
    }
    let dir = prepare_dir(opts.dir)?;
    let addresses = node_addresses(layout.nodes.len());
    let ssh_port = free_port(&addresses, &[])?;
    let etcd_client_port = free_port(&addresses, &[ssh_port])?;
    let etcd_peer_port = free_port(&addresses, &[ssh_port, etcd_client_port])?;
    let medic = std::env::current_exe().map_err(setup("find the medic binary"))?;
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
        apiserver: None,
        nodes: new_nodes(layout, &addresses),
    };
    // Saved first, so that `down` finds whatever starts below even if `up` fails half-way.
    drill.save()?;
    let result = bring_up(&mut drill, opts.progress).await;
    drill.save()?;
    if let Err(e) = result {
        (opts.progress)("start failed; stopping what was started");
        // `down` waits for processes and ports: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || down(&dir)).await;
        return Err(e);
    }
    Ok(drill)
}

/// Refuses a layout the drill cannot build (exit 2).
fn check_layout(layout: &Layout) -> Result<(), DrillError> {
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
            "a drill has at most 16 nodes, not {}",
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
    Ok(())
}

/// An empty drill directory (a previous drill's is cleared; anything else is refused), with
/// `ssh/`, `bin/` and `nodes/`; returns its canonical path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, DrillError> {
    let is_drill = Drill::state_path(dir).exists();
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if dir.exists() && !is_drill && !empty {
        return Err(DrillError::Usage(format!(
            "{} exists and is not a drill directory; pass an empty or new --dir",
            dir.display()
        )));
    }
    if is_drill {
        std::fs::remove_dir_all(dir).map_err(setup(format!("clear {}", dir.display())))?;
    }
    std::fs::create_dir_all(dir.join("ssh"))
        .and_then(|_| std::fs::create_dir_all(dir.join("bin")))
        .and_then(|_| std::fs::create_dir_all(dir.join("nodes")))
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(setup(format!("create {}", dir.display())))?;
    dir.canonicalize()
        .map_err(setup("resolve the drill directory"))
}

/// The layout's nodes at `addresses`: joined, kubelet running, packages at the layout's version
/// and held.
fn new_nodes(layout: &Layout, addresses: &[String]) -> Vec<DrillNode> {
    let pkg = package_version(&layout.version);
    layout
        .nodes
        .iter()
        .zip(addresses)
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
            sshd: None,
            lost: false,
            upgrade_fails: false,
        })
        .collect()
}

async fn bring_up(drill: &mut Drill, progress: &dyn Fn(&str)) -> Result<(), DrillError> {
    progress("generating SSH host keys (one per node) and the user key");
    generate_keys(&drill.dir).await?;
    for n in &drill.nodes {
        drill.new_host_key(&n.name)?;
    }
    write_shims(drill)?;
    start_etcd_members(drill, progress).await?;
    progress("starting the Kubernetes API emulator");
    start_apiserver(drill).await?;
    progress(&format!(
        "starting an sshd for each of {} node addresses",
        drill.nodes.len()
    ));
    start_sshd(drill).await?;
    write_client_files(drill)
}

/// The user key and `authorized_keys` (which holds the user key).
async fn generate_keys(dir: &Path) -> Result<(), DrillError> {
    for key in ["user_key"] {
        run_tool(
            tokio::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "medic-drill", "-f"])
                .arg(dir.join("ssh").join(key)),
            "ssh-keygen (install openssh-client)",
        )
        .await?;
    }
    std::fs::copy(
        dir.join("ssh/user_key.pub"),
        dir.join("ssh/authorized_keys"),
    )
    .map_err(setup("write authorized_keys"))?;
    Ok(())
}

/// One etcd member per control-plane node, as a new cluster; waits until it is healthy.
async fn start_etcd_members(drill: &mut Drill, progress: &dyn Fn(&str)) -> Result<(), DrillError> {
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
    wait_etcd_healthy(&endpoints, Duration::from_secs(60))
        .await
        .map_err(|source| {
            Failure::EtcdUnhealthy {
                source,
                log: drill.node_dir(&cps[0]).join("etcd.log"),
            }
            .into()
        })
}

/// The API emulator seeded with the nodes and a workload, and the kubeconfig that reaches it.
async fn start_apiserver(drill: &mut Drill) -> Result<(), DrillError> {
    let dir = drill.dir.clone();
    write_file(
        &dir.join("seed.yaml"),
        &serde_json::to_string_pretty(&seed(drill)).expect("seed serializes"),
        0o600,
    )?;
    let log =
        std::fs::File::create(dir.join("apiserver.log")).map_err(setup("create apiserver.log"))?;
    let pid = spawn_detached(
        Command::new(&drill.medic)
            .args(["drill", "apiserver", "--port", "0", "--seed"])
            .arg(dir.join("seed.yaml")),
        log,
    )
    .map_err(|source| Failure::Start {
        what: "start the API emulator",
        source,
    })?;
    drill.apiserver = Some(Proc::of(pid)?);
    drill.save()?;
    drill.api_port = wait_api_port(&dir.join("apiserver.log"), drill.apiserver.as_ref()).await?;
    write_file(
        &drill.kubeconfig(),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: drill\n  cluster:\n    server: http://{}\n\
             users:\n- name: drill-admin\n  user: {{}}\ncontexts:\n- name: drill\n  context:\n    cluster: drill\n    user: drill-admin\n\
             current-context: drill\n",
            drill.api_endpoint()
        ),
        0o600,
    )
}

/// One sshd per node address, each with the node's host key; waits until each accepts.
async fn start_sshd(drill: &mut Drill) -> Result<(), DrillError> {
    drill.reload_sshd_async().await
}

/// What a client of the drill reads: known_hosts, the inventory, the join secrets.
fn write_client_files(drill: &Drill) -> Result<(), DrillError> {
    let dir = &drill.dir;
    let mut known = Vec::new();
    for n in &drill.nodes {
        let host_pub = std::fs::read_to_string(drill.host_key(&n.name).with_extension("pub"))
            .map_err(setup("read the host key"))?;
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        known.push(format!(
            "[{}]:{} {}",
            n.address,
            drill.ssh_port,
            host_pub.join(" ")
        ));
    }
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
    )
}

/// The port the API emulator prints it listens on (it picks a free one).
async fn wait_api_port(log: &Path, proc_: Option<&Proc>) -> Result<u16, DrillError> {
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
            return Err(Failure::ApiEmulatorDidNotStart {
                output: text.trim().to_string(),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn inventory_yaml(drill: &Drill) -> String {
    let user = crate::store::username();
    let mut y = format!(
        "# The drill's inventory, written by `medic drill up`; the nodes are loopback addresses\n\
         # each served by its own sshd whose sessions act on the drill (see `medic drill status`).\n\
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

/// `medic drill down`: stops every process the drill started and waits for its ports to be
/// free. Returns what it stopped.
pub(crate) fn down(dir: &Path) -> Result<Vec<String>, DrillError> {
    let _lock = DrillLock::acquire(dir)?;
    let mut drill = Drill::load(dir)?;
    let mut stopped = Vec::new();
    for (what, p) in drill.running().collect::<Vec<_>>() {
        let gone = if what.starts_with("sshd") || what == "apiserver" {
            p.stop(Duration::from_secs(3))
        } else {
            p.kill()
        };
        if !gone {
            return Err(Failure::DidNotStop { what, pid: p.pid }.into());
        }
        stopped.push(format!("{what} (pid {})", p.pid));
    }
    for (pid, cmdline) in processes_mentioning(&drill.dir) {
        if let Ok(p) = Proc::of(pid) {
            p.kill();
            stopped.push(format!("stray process {pid}: {cmdline}"));
        }
    }
    drill.apiserver = None;
    for n in &mut drill.nodes {
        n.etcd = None;
        n.sshd = None;
    }
    drill.save()?;
    let addresses: Vec<String> = drill.nodes.iter().map(|n| n.address.clone()).collect();
    let mut ports = vec![drill.ssh_port, drill.etcd_client_port, drill.etcd_peer_port];
    ports.retain(|p| *p != 0);
    let started = Instant::now();
    for port in ports {
        while !port_free_on(&addresses, port) {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Failure::PortInUse { port }.into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(stopped)
}

/// One row of `medic drill status`.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStatus {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) roles: Vec<String>,
    pub(crate) ssh: bool,
    pub(crate) kubelet: bool,
    pub(crate) joined: bool,
    /// Ready / NotReady / absent from the API.
    pub(crate) node: String,
    pub(crate) version: Option<String>,
    pub(crate) unschedulable: bool,
    pub(crate) etcd: Option<String>,
    pub(crate) packages: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) dir: PathBuf,
    pub(crate) cluster_version: String,
    pub(crate) processes: Vec<(String, u32, bool)>,
    pub(crate) api: String,
    pub(crate) etcd_members: Vec<String>,
    pub(crate) nodes: Vec<NodeStatus>,
}

pub(crate) async fn status(dir: &Path) -> Result<Status, DrillError> {
    let drill = {
        let _lock = DrillLock::acquire_async(dir).await?;
        Drill::load(dir)?
    };
    let mut processes = Vec::new();
    for n in &drill.nodes {
        if let Some(p) = n.sshd {
            processes.push((format!("sshd {}", n.name), p.pid, p.alive()));
        }
    }
    if let Some(p) = drill.apiserver {
        processes.push(("apiserver".to_string(), p.pid, p.alive()));
    }
    for n in &drill.nodes {
        if let Some(p) = n.etcd {
            processes.push((format!("etcd {}", n.name), p.pid, p.alive()));
        }
    }
    let api_nodes = api_nodes(&drill).await;
    let members = etcd_members(&drill).await;
    let mut nodes = Vec::new();
    for n in &drill.nodes {
        let ssh = !n.lost && accepts(&n.address, drill.ssh_port).await;
        nodes.push(node_status(n, ssh, &api_nodes, &members));
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

/// One node's row: what the drill records, what the API shows (`unknown` when it does not
/// answer) and what etcd says of its member (the process when etcd does not answer).
fn node_status(
    n: &DrillNode,
    ssh: bool,
    api_nodes: &Result<BTreeMap<String, serde_json::Value>, impl std::fmt::Display>,
    members: &Result<BTreeMap<String, String>, impl std::fmt::Display>,
) -> NodeStatus {
    let obj = api_nodes.as_ref().ok().and_then(|m| m.get(&n.name));
    let node = match (api_nodes, obj) {
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
    let etcd = match members {
        Ok(list) => list.get(&n.name).cloned(),
        Err(_) => n.etcd.map(|p| {
            if p.alive() {
                "running".to_string()
            } else {
                "dead".to_string()
            }
        }),
    };
    NodeStatus {
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
    }
}
