//! What a drill node's commands do: `systemctl`, `kubeadm`, `apt-get`, `apt-mark` and `kubelet`
//! on a drill node are shims (`DIR/bin/…`, first on the node shell's PATH) that run
//! `medic drill node TOOL ARGS…`, which changes the drill as the real command would change a
//! kubeadm cluster:
//!
//! 1. `systemctl stop|start|restart kubelet` → the Node turns NotReady / Ready (at the installed
//!    kubelet's version); a started kubelet restarts the node's etcd member (a static pod).
//! 2. `kubeadm join` (token and CA hash checked) registers the Node; with `--control-plane`
//!    (certificate key checked) it first adds and starts the node's etcd member.
//!    `kubeadm reset` undoes a join (removing the etcd member); `kubeadm upgrade apply|node`
//!    need the kubeadm package at the target version.
//! 3. `apt-get install PKG=VERSION` changes package versions from the drill's repository, with
//!    apt's refusals (held packages, downgrades) and the `upgrade-fails` break.
//!
//! Procedures stay written for kubeadm; nothing in them knows about the drill.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::Client as EtcdClient;
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::cluster::{
    kube_proxy_pod, kubelet_version_of, node_object, node_status, package_version, Drill,
    DrillError, DrillLock, AVAILABLE_VERSIONS, PACKAGES,
};

/// The commands the drill's node shell runs through medic.
pub const SHIMMED: &[&str] = &["systemctl", "kubeadm", "apt-get", "apt-mark", "kubelet"];

/// What a node command printed and its exit code.
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Reply {
    fn ok(stdout: impl Into<String>) -> Reply {
        Reply {
            stdout: stdout.into(),
            stderr: String::new(),
            code: 0,
        }
    }

    fn err(code: i32, stderr: impl Into<String>) -> Reply {
        Reply {
            stdout: String::new(),
            stderr: stderr.into(),
            code,
        }
    }
}

/// Runs `tool args` as node `$MEDIC_DRILL_NODE` of the drill in `$MEDIC_DRILL_DIR`.
pub async fn run(tool: &str, args: &[String]) -> Reply {
    let (Ok(dir), Ok(node)) = (
        std::env::var("MEDIC_DRILL_DIR"),
        std::env::var("MEDIC_DRILL_NODE"),
    ) else {
        return Reply::err(
            2,
            "medic drill node: run on a drill node (MEDIC_DRILL_DIR and MEDIC_DRILL_NODE are set by its shell)\n",
        );
    };
    let dir = PathBuf::from(dir);
    let lock = match DrillLock::acquire(&dir) {
        Ok(l) => l,
        Err(e) => return Reply::err(1, format!("{e}\n")),
    };
    let mut drill = match Drill::load(&dir) {
        Ok(d) => d,
        Err(e) => return Reply::err(1, format!("{e}\n")),
    };
    if drill.node(&node).is_err() {
        return Reply::err(1, format!("medic drill: unknown node {node}\n"));
    }
    let reply = match tool {
        "systemctl" => systemctl(&mut drill, &node, args).await,
        "kubeadm" => kubeadm(&mut drill, &node, args).await,
        "apt-get" => apt_get(&mut drill, &node, args),
        "apt-mark" => apt_mark(&mut drill, &node, args),
        "kubelet" => kubelet(&drill, &node, args),
        other => Err(Reply::err(127, format!("{other}: command not found\n"))),
    };
    let reply = reply.unwrap_or_else(|r| r);
    if let Err(e) = drill.save() {
        return Reply::err(1, format!("{e}\n"));
    }
    drop(lock);
    reply
}

type Result2 = Result<Reply, Reply>;

fn drill_err(e: DrillError) -> Reply {
    Reply::err(1, format!("{e}\n"))
}

/// Options (`-x`, `--xx`, `--xx=v`) dropped; the rest in order.
fn positional(args: &[String]) -> Vec<&str> {
    args.iter()
        .map(|s| s.as_str())
        .filter(|a| !a.starts_with('-'))
        .collect()
}

fn flag(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| names.contains(&a.as_str()))
}

/// The value of `--name VALUE` or `--name=VALUE` (the last one wins, as with pflag).
fn option(args: &[String], name: &str) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == name {
            found = args.get(i + 1).cloned();
            i += 1;
        } else if let Some(v) = args[i].strip_prefix(&format!("{name}=")) {
            found = Some(v.to_string());
        }
        i += 1;
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Kubernetes API and etcd, as the node's kubelet and kubeadm reach them.

async fn kube_client(drill: &Drill) -> Result<kube::Client, String> {
    crate::action::kube::client_for(&crate::inventory::KubeSettings {
        kubeconfig: Some(drill.kubeconfig()),
        context: None,
    })
    .await
}

/// The API's Node objects by name (as JSON).
pub async fn api_nodes(drill: &Drill) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let client = kube_client(drill).await?;
    let nodes: Api<K8sNode> = Api::all(client);
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|n| {
            let v = serde_json::to_value(&n).ok()?;
            Some((n.metadata.name.clone()?, v))
        })
        .collect())
}

/// Registers the node (or updates its status) as its kubelet does.
async fn post_node_status(drill: &Drill, name: &str, ready: bool) -> Result<(), String> {
    let node = drill.node(name).map_err(|e| e.to_string())?;
    let client = kube_client(drill).await?;
    let nodes: Api<K8sNode> = Api::all(client.clone());
    let exists = nodes
        .get_opt(name)
        .await
        .map_err(|e| format!("get node {name}: {e}"))?
        .is_some();
    if exists {
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": node_status(node, ready)})),
            )
            .await
            .map_err(|e| format!("update node {name}: {e}"))?;
    } else if ready {
        let obj: K8sNode =
            serde_json::from_value(node_object(node, true)).map_err(|e| e.to_string())?;
        nodes
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("register node {name}: {e}"))?;
        let pods: Api<Pod> = Api::namespaced(client, "kube-system");
        let pod: Pod = serde_json::from_value(kube_proxy_pod(name)).map_err(|e| e.to_string())?;
        // Already there when the Node was deleted and registered again: fine.
        let _ = pods.create(&PostParams::default(), &pod).await;
    }
    Ok(())
}

/// Starts or stops the kubelet service of `name`; a joined node's status follows.
pub async fn set_kubelet(drill: &mut Drill, name: &str, running: bool) -> Result<(), DrillError> {
    let (joined, control_plane) = {
        let n = drill.node_mut(name)?;
        n.kubelet = running;
        n.kubelet_version = running.then(|| n.installed_kubelet());
        (n.joined, n.control_plane)
    };
    if running && joined && control_plane {
        // kubeadm runs etcd as a static pod: a starting kubelet starts it again.
        let has_data = drill.etcd_data_dir(name).join("member").exists();
        let alive = drill.node(name)?.etcd.is_some_and(|p| p.alive());
        if has_data && !alive {
            let own = format!("{name}={}", drill.peer_url(drill.node(name)?));
            drill.start_etcd(name, &own, "existing")?;
        }
    }
    if joined {
        post_node_status(drill, name, running)
            .await
            .map_err(|e| DrillError::Failed(format!("kubelet on {name}: {e}")))?;
    }
    Ok(())
}

/// A client on the first of `endpoints` that answers.
async fn etcd_client(endpoints: &[String]) -> Result<EtcdClient, String> {
    if endpoints.is_empty() {
        return Err("no etcd member is running".into());
    }
    crate::etcd::Transport::any_client(&crate::inventory::EtcdSettings {
        endpoints: endpoints.to_vec(),
        ..Default::default()
    })
    .await
}

/// Waits until every endpoint answers and the cluster has a leader.
pub async fn wait_etcd_healthy(endpoints: &[String], timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let mut last = String::new();
        let mut healthy = 0;
        for e in endpoints {
            match etcd_client(std::slice::from_ref(e)).await {
                Ok(mut c) => match c.status().await {
                    Ok(s) if s.leader() != 0 => healthy += 1,
                    Ok(_) => last = format!("{e}: no leader yet"),
                    Err(err) => last = format!("{e}: {err}"),
                },
                Err(err) => last = err,
            }
        }
        if healthy == endpoints.len() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "etcd did not become healthy within {}s ({last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each member's state by name: `healthy`, `healthy, leader`, `unhealthy`, `learner`.
pub async fn etcd_members(drill: &Drill) -> Result<BTreeMap<String, String>, String> {
    let mut client = etcd_client(&drill.live_etcd_endpoints(None)).await?;
    let list = client.member_list().await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for m in list.members() {
        let name = if m.name().is_empty() {
            format!("(unstarted {})", m.peer_urls().join(","))
        } else {
            m.name().to_string()
        };
        let mut state = "unhealthy".to_string();
        if let Some(url) = m.client_urls().first() {
            if let Ok(mut c) = etcd_client(std::slice::from_ref(url)).await {
                if let Ok(s) = c.status().await {
                    state = if s.leader() == m.id() {
                        "healthy, leader".into()
                    } else {
                        "healthy".into()
                    };
                }
            }
        }
        if m.is_learner() {
            state.push_str(", learner");
        }
        out.insert(name, state);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// systemctl

fn unit_name(unit: &str) -> &str {
    unit.strip_suffix(".service").unwrap_or(unit)
}

async fn systemctl(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    let Some((&verb, units)) = pos.split_first() else {
        return Err(Reply::err(1, "systemctl: too few arguments\n"));
    };
    if verb == "daemon-reload" {
        return Ok(Reply::ok(""));
    }
    if units.is_empty() {
        return Err(Reply::err(
            1,
            format!("systemctl {verb}: too few arguments\n"),
        ));
    }
    let quiet = flag(args, &["-q", "--quiet"]);
    let mut out = Reply::ok("");
    for unit in units {
        let unit = unit_name(unit);
        if unit != "kubelet" {
            return Err(Reply::err(
                5,
                format!("Failed to {verb} {unit}.service: Unit {unit}.service not found.\n"),
            ));
        }
        let running = drill.node(node).map_err(drill_err)?.kubelet;
        match verb {
            "start" | "restart" | "try-restart" | "reload-or-restart" => {
                if verb == "try-restart" && !running {
                    continue;
                }
                set_kubelet(drill, node, true).await.map_err(drill_err)?;
            }
            "stop" => set_kubelet(drill, node, false).await.map_err(drill_err)?,
            "enable" | "disable" | "unmask" | "mask" => {}
            "is-enabled" => out.stdout.push_str("enabled\n"),
            "is-active" => {
                if !quiet {
                    out.stdout
                        .push_str(if running { "active\n" } else { "inactive\n" });
                }
                if !running {
                    out.code = 3;
                }
            }
            "status" => {
                let n = drill.node(node).map_err(drill_err)?;
                out.stdout.push_str(&format!(
                    "● kubelet.service - kubelet: The Kubernetes Node Agent\n     Active: {}\n    Version: {}\n",
                    if running { "active (running)" } else { "inactive (dead)" },
                    n.kubelet_version.clone().unwrap_or_else(|| n.installed_kubelet())
                ));
                if !running {
                    out.code = 3;
                }
            }
            other => {
                return Err(Reply::err(
                    1,
                    format!("systemctl: unknown command verb {other}\n"),
                ))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// kubelet --version

fn kubelet(drill: &Drill, node: &str, args: &[String]) -> Result2 {
    if flag(args, &["--version"]) {
        let n = drill.node(node).map_err(drill_err)?;
        return Ok(Reply::ok(format!("Kubernetes {}\n", n.installed_kubelet())));
    }
    Err(Reply::err(
        1,
        "kubelet: the drill's kubelet runs as a service; use systemctl\n",
    ))
}

// ---------------------------------------------------------------------------------------------
// apt-get, apt-mark

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim_start_matches('v').split(['.', '-']);
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

fn apt_get(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    // `-o Key=Value` takes a value.
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-o" {
            i += 2;
            continue;
        }
        rest.push(args[i].clone());
        i += 1;
    }
    let pos = positional(&rest);
    let Some((&op, specs)) = pos.split_first() else {
        return Err(Reply::err(100, "E: No operation given\n"));
    };
    match op {
        "update" => Ok(Reply::ok(
            "Hit:1 https://pkgs.k8s.io/core:/stable:/v1.31/deb  InRelease\nReading package lists... Done\n",
        )),
        "install" => {
            let allow_held = flag(&rest, &["--allow-change-held-packages"]);
            let allow_down = flag(&rest, &["--allow-downgrades"]);
            let n = drill.node(node).map_err(drill_err)?.clone();
            let mut wanted = BTreeMap::new();
            for spec in specs {
                let (pkg, version) = match spec.split_once('=') {
                    Some((p, v)) => (p, v.to_string()),
                    None => (*spec, package_version(AVAILABLE_VERSIONS.last().expect("versions"))),
                };
                if !PACKAGES.contains(&pkg) {
                    return Err(Reply::err(100, format!("E: Unable to locate package {pkg}\n")));
                }
                let known = AVAILABLE_VERSIONS
                    .iter()
                    .any(|v| package_version(v) == version);
                if !known {
                    return Err(Reply::err(
                        100,
                        format!("E: Version '{version}' for '{pkg}' was not found\n"),
                    ));
                }
                wanted.insert(pkg.to_string(), version);
            }
            let changed: Vec<&String> = wanted
                .iter()
                .filter(|(p, v)| n.package_version(p) != Some(v.as_str()))
                .map(|(p, _)| p)
                .collect();
            if changed.iter().any(|p| n.held.contains(*p)) && !allow_held {
                return Err(Reply::err(
                    100,
                    "E: Held packages were changed and -y was used without --allow-change-held-packages.\n",
                ));
            }
            let older = |p: &str, v: &str| {
                parse_version(v) < n.package_version(p).and_then(parse_version)
            };
            let downgrade = changed.iter().any(|p| older(p, &wanted[*p]));
            if downgrade && !allow_down {
                return Err(Reply::err(
                    100,
                    "E: Packages were downgraded and -y was used without --allow-downgrades.\n",
                ));
            }
            let upgrade = changed.iter().any(|p| !older(p, &wanted[*p]));
            if upgrade && n.upgrade_fails {
                drill.node_mut(node).map_err(drill_err)?.upgrade_fails = false;
                let p = changed.iter().find(|p| !older(p, &wanted[**p])).expect("one");
                return Err(Reply::err(
                    100,
                    format!(
                        "E: Failed to fetch https://pkgs.k8s.io/core:/stable:/v1.31/deb/amd64/{p}_{}_amd64.deb  503  Service Unavailable [IP: 151.101.2.132 443]\nE: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n",
                        wanted[*p]
                    ),
                ));
            }
            let mut out = String::from("Reading package lists... Done\n");
            let entry = drill.node_mut(node).map_err(drill_err)?;
            for (p, v) in &wanted {
                match entry.packages.insert(p.clone(), v.clone()) {
                    Some(old) if &old == v => {
                        out.push_str(&format!("{p} is already the newest version ({v}).\n"))
                    }
                    Some(old) => out.push_str(&format!(
                        "Unpacking {p} ({v}) over ({old}) ...\nSetting up {p} ({v}) ...\n"
                    )),
                    None => out.push_str(&format!("Setting up {p} ({v}) ...\n")),
                }
            }
            Ok(Reply::ok(out))
        }
        other => Err(Reply::err(100, format!("E: Invalid operation {other}\n"))),
    }
}

fn apt_mark(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    let Some((&op, pkgs)) = pos.split_first() else {
        return Err(Reply::err(100, "E: No operation given\n"));
    };
    let entry = drill.node_mut(node).map_err(drill_err)?;
    let mut out = String::new();
    match op {
        "hold" | "unhold" => {
            for p in pkgs {
                if !entry.packages.contains_key(*p) {
                    return Err(Reply::err(
                        100,
                        format!("E: Unable to locate package {p}\n"),
                    ));
                }
                if op == "hold" {
                    entry.held.insert(p.to_string());
                    out.push_str(&format!("{p} set on hold.\n"));
                } else {
                    entry.held.remove(*p);
                    out.push_str(&format!("Canceled hold on {p}.\n"));
                }
            }
        }
        "showhold" => {
            for p in &entry.held {
                out.push_str(&format!("{p}\n"));
            }
        }
        other => return Err(Reply::err(100, format!("E: Invalid operation {other}\n"))),
    }
    Ok(Reply::ok(out))
}

// ---------------------------------------------------------------------------------------------
// kubeadm

async fn kubeadm(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    match pos.as_slice() {
        ["join", ..] => kubeadm_join(drill, node, args).await,
        ["reset", ..] => kubeadm_reset(drill, node, args).await,
        ["version", ..] => {
            let v = kubelet_version_of(
                drill
                    .node(node)
                    .map_err(drill_err)?
                    .package_version("kubeadm")
                    .unwrap_or_default(),
            );
            Ok(Reply::ok(format!("{v}\n")))
        }
        ["token", "create", ..] if flag(args, &["--print-join-command"]) => Ok(Reply::ok(format!(
            "{} --token {}\n",
            drill.join_command(),
            drill.token
        ))),
        ["init", "phase", "upload-certs", ..] => Ok(Reply::ok(format!(
            "[upload-certs] Using certificate key:\n{}\n",
            drill.certificate_key
        ))),
        ["upgrade", "plan", ..] => Ok(Reply::ok(format!(
            "[upgrade/versions] Cluster version: v{}\n[upgrade/versions] kubeadm version: {}\n",
            drill.cluster_version,
            kubelet_version_of(
                drill
                    .node(node)
                    .map_err(drill_err)?
                    .package_version("kubeadm")
                    .unwrap_or_default()
            )
        ))),
        ["upgrade", "apply", target, ..] => kubeadm_upgrade(drill, node, Some(target)),
        ["upgrade", "node", ..] => kubeadm_upgrade(drill, node, None),
        _ => Err(Reply::err(
            1,
            format!(
                "kubeadm: the drill does not implement `kubeadm {}`\n",
                pos.join(" ")
            ),
        )),
    }
}

fn kubeadm_upgrade(drill: &mut Drill, node: &str, target: Option<&str>) -> Result2 {
    let n = drill.node(node).map_err(drill_err)?.clone();
    if !n.joined {
        return Err(Reply::err(
            1,
            "[upgrade] couldn't read /etc/kubernetes/kubelet.conf: this node has not joined a cluster\n",
        ));
    }
    let kubeadm = n.package_version("kubeadm").unwrap_or_default().to_string();
    match target {
        Some(target) => {
            if !n.control_plane {
                return Err(Reply::err(
                    1,
                    "[upgrade/apply] FATAL: run `kubeadm upgrade apply` on a control-plane node\n",
                ));
            }
            let Some(t) = parse_version(target) else {
                return Err(Reply::err(
                    1,
                    format!("[upgrade/version] FATAL: invalid version {target:?}\n"),
                ));
            };
            if Some(t) > parse_version(&kubeadm) {
                return Err(Reply::err(
                    1,
                    format!(
                        "[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\t- Specified version to upgrade to {target:?} is higher than the kubeadm version \"{}\". Upgrade kubeadm first using the tool you used to install kubeadm\n",
                        kubelet_version_of(&kubeadm)
                    ),
                ));
            }
            drill.cluster_version = target.trim_start_matches('v').to_string();
            Ok(Reply::ok(format!(
                "[upgrade/successful] SUCCESS! Your cluster was upgraded to \"{target}\". Enjoy!\n"
            )))
        }
        None => {
            if parse_version(&kubeadm) < parse_version(&drill.cluster_version) {
                return Err(Reply::err(
                    1,
                    format!(
                        "[upgrade/node] FATAL: kubeadm {} is older than the cluster (v{})\n",
                        kubelet_version_of(&kubeadm),
                        drill.cluster_version
                    ),
                ));
            }
            Ok(Reply::ok(
                "[upgrade] The configuration for this node was successfully updated!\n[upgrade] Now you should go ahead and upgrade the kubelet package using your package manager.\n",
            ))
        }
    }
}

async fn kubeadm_join(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    let endpoint = pos.get(1).copied().unwrap_or_default();
    if endpoint != drill.api_endpoint() {
        return Err(Reply::err(
            1,
            format!("error execution phase preflight: couldn't validate the identity of the API Server: Get \"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info\": dial tcp {endpoint}: connect: connection refused\n"),
        ));
    }
    if option(args, "--token").as_deref() != Some(drill.token.as_str()) {
        return Err(Reply::err(
            1,
            "error execution phase preflight: couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID (the token is wrong or expired)\n",
        ));
    }
    if option(args, "--discovery-token-ca-cert-hash").as_deref()
        != Some(drill.ca_cert_hash.as_str())
    {
        return Err(Reply::err(
            1,
            "error execution phase preflight: couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap does not match the --discovery-token-ca-cert-hash\n",
        ));
    }
    let control_plane = flag(args, &["--control-plane"]);
    if control_plane
        && option(args, "--certificate-key").as_deref() != Some(drill.certificate_key.as_str())
    {
        return Err(Reply::err(
            1,
            "error execution phase control-plane-prepare/download-certs: error downloading certs: error decoding certificate key: the certificate key is wrong or the uploaded certificates expired\n",
        ));
    }
    let n = drill.node(node).map_err(drill_err)?.clone();
    if n.joined {
        return Err(Reply::err(
            1,
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists\n(run `kubeadm reset` first)\n",
        ));
    }
    if let Ok(nodes) = api_nodes(drill).await {
        if let Some(existing) = nodes.get(node) {
            let ready = existing["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if ready {
                return Err(Reply::err(
                    1,
                    format!("error execution phase kubelet-start: a Node with name \"{node}\" and status \"Ready\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node\n"),
                ));
            }
        }
    }
    let mut out = String::from("[preflight] Running pre-flight checks\n");
    if control_plane {
        if drill.etcd_data_dir(node).join("member").exists() {
            return Err(Reply::err(
                1,
                "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty\n",
            ));
        }
        let endpoints = drill.live_etcd_endpoints(Some(node));
        let mut client = etcd_client(&endpoints).await.map_err(|e| {
            Reply::err(
                1,
                format!("error execution phase control-plane-join/etcd: {e}\n"),
            )
        })?;
        let peer = drill.peer_url(&n);
        // As kubeadm does, a refused add is retried for a while: a cluster that just changed
        // membership answers "unhealthy cluster" (etcd 3.4) or "member not found" for a few
        // seconds. A peer URL that is already a member is final.
        let started = Instant::now();
        let added = loop {
            match client.member_add([peer.clone()], None).await {
                Ok(added) => break added,
                Err(e)
                    if !e.to_string().contains("already exists")
                        && started.elapsed() < Duration::from_secs(30) =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(Reply::err(
                        1,
                        format!("error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: etcdserver: {e}\n"),
                    ))
                }
            }
        };
        let new_id = added.member().map(|m| m.id()).unwrap_or_default();
        let initial: Vec<String> = added
            .member_list()
            .iter()
            .map(|m| {
                let name = if m.id() == new_id { node } else { m.name() };
                format!("{name}={}", m.peer_urls().join(","))
            })
            .collect();
        drill
            .start_etcd(node, &initial.join(","), "existing")
            .map_err(drill_err)?;
        // Saved now: the member runs even if what follows fails.
        drill.save().map_err(drill_err)?;
        out.push_str("[etcd] Announced new etcd member joining to the existing etcd cluster\n[etcd] Waiting for the new etcd member to join the cluster\n");
        let own = vec![drill.client_url(&n)];
        wait_etcd_healthy(&own, Duration::from_secs(40))
            .await
            .map_err(|e| {
                Reply::err(
                    1,
                    format!("error execution phase control-plane-join/etcd: {e}\n"),
                )
            })?;
    }
    {
        let entry = drill.node_mut(node).map_err(drill_err)?;
        entry.joined = true;
    }
    set_kubelet(drill, node, true).await.map_err(drill_err)?;
    out.push_str(&format!(
        "[kubelet-start] Starting the kubelet\n\nThis node has joined the cluster{}:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.\n",
        if control_plane { " and a new control plane instance was created" } else { "" }
    ));
    Ok(Reply::ok(out))
}

async fn kubeadm_reset(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    if !flag(args, &["-f", "--force"]) {
        return Err(Reply::err(
            1,
            "[reset] Are you sure you want to proceed? [y/N]: aborted (no terminal; pass --force)\n",
        ));
    }
    let n = drill.node(node).map_err(drill_err)?.clone();
    let mut out = String::from("[preflight] Running pre-flight checks\n");
    // The member is looked up in the cluster, not from local traces: a join interrupted
    // between adding the member and starting it leaves an unstarted member and no data.
    if n.control_plane {
        let peer = drill.peer_url(&n);
        match etcd_client(&drill.live_etcd_endpoints(Some(node))).await {
            Ok(mut c) => {
                let members = c.member_list().await.map(|l| l.members().to_vec());
                let found = members.ok().and_then(|ms| {
                    ms.into_iter()
                        .find(|m| m.name() == node || m.peer_urls().contains(&peer))
                });
                if let Some(m) = found {
                    match c.member_remove(m.id()).await {
                        Ok(_) => out.push_str("[reset] Removed the etcd member of this node\n"),
                        Err(e) => out.push_str(&format!(
                            "[reset] Failed to remove etcd member: {e}; please manually remove this etcd member using etcdctl\n"
                        )),
                    }
                }
            }
            Err(e) => out.push_str(&format!(
                "[reset] Failed to remove etcd member: {e}; please manually remove this etcd member using etcdctl\n"
            )),
        }
    }
    drill.stop_etcd(node).map_err(drill_err)?;
    let _ = std::fs::remove_dir_all(drill.etcd_data_dir(node));
    if n.kubelet {
        // The kubelet is stopped while still joined, so the Node shows NotReady.
        set_kubelet(drill, node, false).await.map_err(drill_err)?;
    }
    drill.node_mut(node).map_err(drill_err)?.joined = false;
    out.push_str("[reset] Stopping the kubelet service\n[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]\n");
    Ok(Reply::ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_take_values_in_both_spellings_and_the_last_wins() {
        let a = s(&["join", "x", "--token", "a", "--token=b", "--control-plane"]);
        assert_eq!(option(&a, "--token").as_deref(), Some("b"));
        assert_eq!(option(&a, "--certificate-key"), None);
        assert!(flag(&a, &["--control-plane"]));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("1.30.10-1.1") > parse_version("1.30.9-1.1"));
        assert!(parse_version("v1.31.0") > parse_version("1.30.4"));
        assert_eq!(parse_version("x"), None);
    }
}
