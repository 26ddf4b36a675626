//! `medic drill`: bring the rehearsal cluster up and down, break it, and run the API emulator.

use std::io::Write as _;
use std::path::Path;

use serde_json::json;

use super::args::DrillCommand;
use super::{print_json, CliError, Ctx};
use crate::drill::cluster::{self, DrillError};
use crate::inventory::Inventory;

impl From<DrillError> for CliError {
    fn from(e: DrillError) -> Self {
        CliError {
            code: match e {
                DrillError::Usage(_) => 2,
                DrillError::Failed(_) => 1,
            },
            message: e.to_string(),
        }
    }
}

pub(super) async fn drill_command(
    ctx: &Ctx,
    dir: Option<&Path>,
    command: &DrillCommand,
) -> Result<i32, CliError> {
    let default_dir = ctx.cli.state_dir.join("drill");
    let dir = dir.unwrap_or(&default_dir);
    let say = |text: String| {
        if ctx.json() {
            print_json(&json!({ "message": text }));
        } else {
            println!("{text}");
        }
    };
    match command {
        DrillCommand::Up {
            control_planes,
            workers,
            like,
            version,
        } => {
            let layout = match like {
                Some(path) => cluster::Layout::like(
                    &Inventory::load(path).map_err(|e| CliError::usage(e.to_string()))?,
                    version,
                ),
                None => cluster::Layout::sized(*control_planes, *workers, version),
            };
            up(ctx, dir, layout).await
        }
        DrillCommand::Status => status(ctx, dir).await,
        DrillCommand::Break { scenario, node } => {
            say(cluster::break_node(dir, *scenario, node).await?);
            Ok(0)
        }
        DrillCommand::Provision { node } => {
            // A reinstall drops its connections; the drill's one sshd would keep them.
            close_drill_masters(dir, Some(node));
            say(cluster::provision(dir, node)?);
            Ok(0)
        }
        DrillCommand::Down => down(ctx, dir),
        DrillCommand::Node { tool, args } => {
            let reply = crate::drill::node::run(tool, args).await;
            print!("{}", reply.stdout);
            eprint!("{}", reply.stderr);
            let _ = std::io::stdout().flush();
            Ok(reply.code)
        }
        DrillCommand::Apiserver { .. } => unreachable!("handled above"),
        DrillCommand::Snapshot { file } => {
            say(cluster::snapshot(dir, file).await?);
            Ok(0)
        }
    }
}

pub(super) async fn run_apiserver(port: u16, seed: Option<&Path>) -> Result<i32, CliError> {
    let server = crate::drill::apiserver::ApiServer::new();
    if let Some(seed) = seed {
        let objects = crate::drill::read_seed(seed).map_err(CliError::usage)?;
        server.seed(objects).map_err(CliError::usage)?;
    }
    let serve = server.serve(port, |port| {
        println!("medic drill apiserver listening on http://127.0.0.1:{port}");
        let _ = std::io::stdout().flush();
    });
    tokio::select! {
        r = serve => r.map(|_| 0).map_err(|e| CliError { code: 1, message: format!("serve the API emulator: {e}") }),
        _ = tokio::signal::ctrl_c() => Ok(0),
    }
}

/// `medic drill up`: starts the drill with `layout` and prints how to use it.
async fn up(ctx: &Ctx, dir: &Path, layout: cluster::Layout) -> Result<i32, CliError> {
    let progress = |step: &str| eprintln!("drill: {step}");
    let drill = cluster::up(cluster::UpOptions {
        layout,
        dir,
        progress: &progress,
    })
    .await?;
    let d = drill.dir.display();
    if ctx.json() {
        print_json(&json!({
            "dir": drill.dir,
            "inventory": drill.dir.join("cluster.yaml"),
            "kubeconfig": drill.kubeconfig(),
            "known_hosts": drill.dir.join("known_hosts"),
            "nodes": drill.nodes.iter().map(|n| json!({"name": n.name, "address": n.address, "roles": n.roles})).collect::<Vec<_>>(),
        }));
    } else {
        let cps = drill.nodes.iter().filter(|n| n.control_plane).count();
        println!(
            "drill is up in {d}: {cps} control-plane node(s) with etcd, {} worker(s), Kubernetes v{}\n\n\
             \x20 inventory    {d}/cluster.yaml\n\
             \x20 kubeconfig   {d}/kubeconfig\n\
             \x20 known_hosts  {d}/known_hosts (the nodes' SSH host key)\n\
             \x20 join secrets {d}/join-command, {d}/token, {d}/certificate-key\n\n\
             Use it:\n\
             \x20 export MEDIC_INVENTORY={d}/cluster.yaml KUBECONFIG={d}/kubeconfig\n\
             \x20 kubectl get nodes\n\
             \x20 medic drill status\n\
             \x20 medic drill break node-lost {}        # etcd-down, kubelet-down, node-lost, upgrade-fails\n\
             \x20 medic drill provision {}              # a fresh machine for a lost node\n\
             \x20 medic drill down",
            drill.nodes.len() - cps,
            drill.cluster_version,
            drill.nodes.iter().rfind(|n| n.control_plane).map(|n| n.name.as_str()).unwrap_or("cp-1"),
            drill.nodes.iter().rfind(|n| n.control_plane).map(|n| n.name.as_str()).unwrap_or("cp-1"),
        );
    }
    Ok(0)
}

/// `medic drill status`: the drill's processes, API, etcd members and nodes as a table.
async fn status(ctx: &Ctx, dir: &Path) -> Result<i32, CliError> {
    let st = cluster::status(dir).await?;
    if ctx.json() {
        print_json(&serde_json::to_value(&st).expect("status serializes"));
        return Ok(0);
    }
    println!(
        "drill {} (Kubernetes v{})",
        st.dir.display(),
        st.cluster_version
    );
    for (what, pid, alive) in &st.processes {
        println!(
            "  {what:<12} pid {pid:<8} {}",
            if *alive { "running" } else { "not running" }
        );
    }
    if st.processes.is_empty() {
        println!("  nothing runs: the drill is down (start a new one with `medic drill up`)");
        return Ok(0);
    }
    println!("  API          {}", st.api);
    for extra in &st.etcd_members {
        println!("  etcd member  {extra}");
    }
    let mut rows = vec![[
        "NODE",
        "ADDRESS",
        "ROLES",
        "SSH",
        "KUBELET",
        "NODE STATUS",
        "VERSION",
        "ETCD",
    ]
    .map(String::from)];
    for n in &st.nodes {
        let mut node = n.node.clone();
        if n.unschedulable {
            node.push_str(",SchedulingDisabled");
        }
        rows.push([
            n.name.clone(),
            n.address.clone(),
            n.roles.join(","),
            if n.ssh { "up" } else { "refused" }.into(),
            if n.kubelet { "running" } else { "stopped" }.into(),
            node,
            n.version.clone().unwrap_or_else(|| "-".into()),
            n.etcd.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    println!();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(0)
}

/// `medic drill down`: stops everything and lists what was stopped.
fn down(ctx: &Ctx, dir: &Path) -> Result<i32, CliError> {
    let mut stopped = close_drill_masters(dir, None);
    stopped.extend(cluster::down(dir)?);
    if ctx.json() {
        print_json(&json!({ "stopped": stopped }));
    } else if stopped.is_empty() {
        println!("nothing of the drill in {} was running", dir.display());
    } else {
        for s in &stopped {
            println!("stopped {s}");
        }
        println!("drill in {} is down", dir.display());
    }
    Ok(0)
}

/// Closes the ssh masters kept (`ssh.persist`) for the drill's nodes, or for one of them.
fn close_drill_masters(dir: &Path, node: Option<&str>) -> Vec<String> {
    let Ok(inventory) = Inventory::load(&dir.join("cluster.yaml")) else {
        return Vec::new();
    };
    let nodes: Vec<_> = inventory
        .nodes
        .iter()
        .filter(|n| node.is_none_or(|name| n.name == name))
        .cloned()
        .collect();
    crate::ssh::close_kept_masters(Some(&nodes))
        .into_iter()
        .filter(|m| m.was_running)
        .map(|m| format!("ssh master of {}", m.node.unwrap_or_default()))
        .collect()
}
