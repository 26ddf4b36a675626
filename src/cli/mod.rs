//! The command line: clap definitions and one handler per command.
//!
//! Exit codes: 0 success, 1 a phase or check failed, 2 usage or input error, 3 refused for
//! safety (unmet requirement, lease held, guard).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::engine::{acquire_lease, interrupted_phases, Engine, EngineError, EngineSetup};
use crate::events::EventSink;
use crate::inventory::Inventory;
use crate::plan::PhaseId;
use crate::procedure::{redact_set, Catalog, Params, ProcedureError};
use crate::render::{operation_json, Export, JsonCollector, PlanView, TextRenderer};
use crate::ssh::SshPool;
use crate::store::{
    format_time, hostname, now_ms, username, Access, Actor, Commit, HistoryEntry, Operation,
    OperationState, Store, StoreError,
};
use crate::template::Templates;

#[derive(Parser, Debug)]
#[command(
    name = "medic",
    version,
    about = "Plan-based remediation runner for Kubernetes clusters",
    long_about = "Runs recovery procedures (plans/*.yaml) as plans of phases that can be executed, resumed, \
                  rolled back and reviewed as a dry-run, with every step recorded in ./state."
)]
pub struct Cli {
    /// Directory of the state database.
    #[arg(
        long,
        global = true,
        env = "MEDIC_STATE_DIR",
        default_value = "./state"
    )]
    pub state_dir: PathBuf,
    /// Cluster inventory (nodes, SSH, kubeconfig, etcd).
    #[arg(
        long,
        global = true,
        env = "MEDIC_INVENTORY",
        default_value = "./cluster.yaml"
    )]
    pub inventory: PathBuf,
    /// Extra procedures; files here add to or override the built-in ones by name.
    #[arg(long, global = true, env = "MEDIC_PLANS_DIR")]
    pub plans_dir: Option<PathBuf>,
    /// Most phases a plan may have (includes and foreach expanded); a larger one is refused.
    #[arg(long, global = true, env = "MEDIC_MAX_PHASES", value_name = "N",
          default_value_t = crate::procedure::DEFAULT_MAX_PHASES,
          value_parser = clap::value_parser!(usize))]
    pub max_phases: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the procedures, or show one.
    Procedures {
        #[command(subcommand)]
        show: Option<ProceduresCommand>,
    },
    /// Create an operation from a procedure and (unless --manual) run it.
    Start(StartArgs),
    /// List operations.
    Operations,
    /// Show the plan of an operation, or act on it.
    Plan(PlanArgs),
    /// The local rehearsal cluster: real etcd members, one sshd serving every node address, and
    /// the Kubernetes API emulator; break it on purpose and rehearse a procedure on it.
    Drill {
        /// The drill's directory (inventory, kubeconfig, keys, logs).
        #[arg(long, global = true, env = "MEDIC_DRILL_DIR")]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        command: DrillCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// Start a drill cluster in the background and write its inventory.
    Up {
        /// Control-plane nodes (each runs an etcd member).
        #[arg(long, default_value_t = 3, conflicts_with = "like")]
        control_planes: usize,
        /// Worker nodes.
        #[arg(long, default_value_t = 2, conflicts_with = "like")]
        workers: usize,
        /// Mirror the nodes and roles of an inventory (control-plane/master/etcd roles get etcd).
        #[arg(long, value_name = "CLUSTER_YAML")]
        like: Option<PathBuf>,
        /// Kubernetes version the nodes start at.
        #[arg(long, default_value = crate::drill::cluster::DEFAULT_VERSION)]
        version: String,
    },
    /// What runs, and the cluster's health.
    Status,
    /// Simulate a failure on a node.
    Break {
        #[arg(value_enum)]
        scenario: crate::drill::cluster::Scenario,
        node: String,
    },
    /// Give a node a fresh machine (reachable again, not joined, no etcd data), as an
    /// operator gets a replacement for a lost node.
    Provision { node: String },
    /// Stop everything the drill started.
    Down,
    /// Run a command as a drill node does (what the node's shims call).
    #[command(hide = true)]
    Node {
        tool: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the Kubernetes API emulator in the foreground (Ctrl-C stops it).
    Apiserver {
        /// Port on 127.0.0.1 (0 picks a free one; the address is printed).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// A YAML list of objects to start with (nodes, pods, DaemonSets, ReplicaSets, budgets).
        #[arg(long)]
        seed: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProceduresCommand {
    /// Show a procedure's parameters and phases.
    Show { name: String },
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Procedure name (see `medic procedures`).
    pub name: String,
    /// A parameter value, key=value; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A parameter value read from a file (one trailing newline dropped), key=PATH; keeps
    /// secrets such as join tokens out of the command line and shell history.
    #[arg(long = "set-file", value_name = "KEY=PATH")]
    pub set_file: Vec<String>,
    /// Create the operation but run nothing; run it later with `medic plan resume`.
    #[arg(long)]
    pub manual: bool,
    /// Print what would run, with every action rendered; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why this operation is being run (recorded in history).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Operation ID (or a unique prefix); defaults to the single active operation.
    #[arg(long, global = true)]
    pub operation: Option<String>,
    /// Top-level phases only.
    #[arg(long)]
    pub short: bool,
    /// Follow changes until the run ends (exit 0 when done, 1 on failure).
    #[arg(long)]
    pub tail: bool,
    /// Why (recorded in history).
    #[arg(long, global = true)]
    pub reason: Option<String>,
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Execute one phase (a group runs its unfinished children).
    Execute(PhaseArgs),
    /// Roll back one phase (a group rolls back its started children in reverse order).
    Rollback(PhaseArgs),
    /// Execute everything not yet completed; stops at a pause.
    Resume(RunArgs),
    /// Close the operation: completed if every phase completed, else failed.
    Complete,
    /// Export the plan for a change review.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Markdown)]
        format: ExportFormat,
    },
    /// Show phase output.
    Logs {
        #[arg(long)]
        phase: Option<String>,
    },
    /// Show every recorded state change.
    History,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Markdown,
    Json,
    Dot,
}

#[derive(Args, Debug)]
pub struct PhaseArgs {
    /// Phase ID such as /etcd/remove.
    #[arg(long)]
    pub phase: String,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Override a safety refusal (recorded in history).
    #[arg(long)]
    pub force: bool,
    /// Show what would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
}

/// 3: another process holds the database (refused so as not to run beside it); 2: the
/// state directory given is missing, unusable as it stands (read-only for a change, not
/// ours to open) or unreadable as a database; 1: the store failed under a run (deleted or
/// replaced, disk full, other I/O errors).
impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<ProcedureError> for CliError {
    fn from(e: ProcedureError) -> Self {
        CliError {
            code: 2,
            message: e.to_string(),
        }
    }
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

/// Parses arguments, runs the command, and returns the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let parsed = ignore_empty_env(Cli::command())
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let colors = console::Term::stdout().is_term() && std::env::var_os("NO_COLOR").is_none();
    console::set_colors_enabled(colors);
    console::set_colors_enabled_stderr(colors);
    let json = cli.output == Format::Json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli, args)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!("{}", json!({"error": e.message, "exit_code": e.code}));
            } else {
                eprintln!("{} {}", console::style("error:").red().bold(), e.message);
            }
            e.code
        }
    }
}

/// An empty `MEDIC_*` variable (`MEDIC_STATE_DIR=` in a script, an unset variable exported)
/// behaves as if it were unset: the option's default applies, instead of clap refusing a flag
/// the user never typed.
fn ignore_empty_env(mut cmd: clap::Command) -> clap::Command {
    let empty: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty())
        })
        .map(|a| a.get_id().clone())
        .collect();
    for id in empty {
        cmd = cmd.mut_arg(id, |a| a.env(clap::builder::Resettable::Reset));
    }
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, ignore_empty_env);
    }
    cmd
}

struct Ctx {
    cli: Cli,
    args: Vec<String>,
}

impl Ctx {
    fn json(&self) -> bool {
        self.cli.output == Format::Json
    }

    fn actor(&self, redact: impl Fn(&str) -> String) -> Actor {
        let command = self
            .args
            .iter()
            .map(|a| redact(a))
            .map(|a| crate::template::shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        Actor {
            user: username(),
            host: hostname(),
            pid: std::process::id(),
            command,
        }
    }

    fn catalog(&self) -> Result<Catalog, CliError> {
        Ok(Catalog::load(self.cli.plans_dir.as_deref())?.with_max_phases(self.cli.max_phases))
    }

    /// The state database; only `medic start` creates one (`Access::Create`).
    fn store(&self, access: Access) -> Result<Store, CliError> {
        Ok(Store::open_with(&self.cli.state_dir, access)?)
    }

    /// The inventory if its file exists (a broken one is an error); `None` if there is none.
    fn inventory(&self) -> Result<Option<Arc<Inventory>>, CliError> {
        let path = &self.cli.inventory;
        if !path.exists() {
            return Ok(None);
        }
        Inventory::load(path)
            .map(|i| Some(Arc::new(i)))
            .map_err(|e| CliError::usage(e.to_string()))
    }
}

/// Whether any action of the plan acts on inventory nodes.
fn needs_inventory(plan: &crate::action::Plan) -> bool {
    plan.nodes().iter().any(|n| {
        [n.action.as_ref(), n.rollback.as_ref()]
            .into_iter()
            .flatten()
            .any(|a| a.needs_inventory())
    })
}

/// Whether any action of the plan talks to the Kubernetes API.
fn uses_kube(plan: &crate::action::Plan) -> bool {
    plan.nodes().iter().any(|n| {
        [n.action.as_ref(), n.rollback.as_ref()]
            .into_iter()
            .flatten()
            .any(|a| a.kind() == "kube")
    })
}

/// The inventory for a plan: a broken inventory is an error only when the plan needs one
/// (a procedure such as `local-preflight` runs whatever `cluster.yaml` holds).
fn inventory_for(
    ctx: &Ctx,
    plan: &crate::action::Plan,
) -> Result<Option<Arc<Inventory>>, CliError> {
    match ctx.inventory() {
        Ok(inventory) => Ok(inventory),
        Err(e) if needs_inventory(plan) || uses_kube(plan) => Err(e),
        Err(_) => {
            if !ctx.json() {
                eprintln!(
                    "note: ignoring the inventory {}, which has problems; this plan does not use it",
                    ctx.cli.inventory.display()
                );
            }
            Ok(None)
        }
    }
}

fn missing_inventory(ctx: &Ctx) -> CliError {
    CliError::usage(format!(
        "this plan acts on cluster nodes and needs an inventory, but {} does not exist; pass --inventory FILE (or set MEDIC_INVENTORY)",
        ctx.cli.inventory.display()
    ))
}

async fn run(cli: Cli, args: Vec<String>) -> Result<i32, CliError> {
    let ctx = Ctx { cli, args };
    match &ctx.cli.command {
        Command::Procedures { show: None } => list_procedures(&ctx),
        Command::Procedures {
            show: Some(ProceduresCommand::Show { name }),
        } => show_procedure(&ctx, name),
        Command::Start(start) => start_operation(&ctx, start).await,
        Command::Operations => list_operations(&ctx),
        Command::Plan(plan) => plan_command(&ctx, plan).await,
        Command::Drill {
            command: DrillCommand::Apiserver { port, seed },
            ..
        } => run_apiserver(*port, seed.as_deref()).await,
        Command::Drill { dir, command } => drill_command(&ctx, dir.as_deref(), command).await,
    }
}

impl From<crate::drill::cluster::DrillError> for CliError {
    fn from(e: crate::drill::cluster::DrillError) -> Self {
        use crate::drill::cluster::DrillError;
        CliError {
            code: match e {
                DrillError::Usage(_) => 2,
                DrillError::Failed(_) => 1,
            },
            message: e.to_string(),
        }
    }
}

async fn drill_command(
    ctx: &Ctx,
    dir: Option<&std::path::Path>,
    command: &DrillCommand,
) -> Result<i32, CliError> {
    use crate::drill::cluster;
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
        DrillCommand::Status => {
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
                println!(
                    "  nothing runs: the drill is down (start a new one with `medic drill up`)"
                );
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
        DrillCommand::Break { scenario, node } => {
            say(cluster::break_node(dir, *scenario, node).await?);
            Ok(0)
        }
        DrillCommand::Provision { node } => {
            say(cluster::provision(dir, node)?);
            Ok(0)
        }
        DrillCommand::Down => {
            let stopped = cluster::down(dir)?;
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
        DrillCommand::Node { tool, args } => {
            let reply = crate::drill::node::run(tool, args).await;
            print!("{}", reply.stdout);
            eprint!("{}", reply.stderr);
            let _ = std::io::stdout().flush();
            Ok(reply.code)
        }
        DrillCommand::Apiserver { .. } => unreachable!("handled above"),
    }
}

async fn run_apiserver(port: u16, seed: Option<&std::path::Path>) -> Result<i32, CliError> {
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

fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

fn list_procedures(ctx: &Ctx) -> Result<i32, CliError> {
    let catalog = ctx.catalog()?;
    let mut rows = Vec::new();
    for name in catalog.names() {
        match catalog.get(name) {
            Ok(p) => rows.push(
                json!({"name": name, "description": p.description, "file": p.file, "valid": true}),
            ),
            Err(e) => rows.push(json!({"name": name, "error": e.to_string(), "valid": false})),
        }
    }
    if ctx.json() {
        print_json(&json!({ "procedures": rows }));
        return Ok(0);
    }
    let width = rows
        .iter()
        .filter_map(|r| r["name"].as_str())
        .map(|n| n.len())
        .max()
        .unwrap_or(4);
    for r in &rows {
        let name = r["name"].as_str().unwrap_or_default();
        match r["description"].as_str() {
            Some(d) => println!("{name:width$}  {}", d.lines().next().unwrap_or_default()),
            None => println!(
                "{name:width$}  {} (invalid; `medic procedures show {name}` lists the problems)",
                console::style("✘").red()
            ),
        }
    }
    Ok(0)
}

fn show_procedure(ctx: &Ctx, name: &str) -> Result<i32, CliError> {
    let procedure = ctx.catalog()?.get(name)?;
    if ctx.json() {
        fn phases(list: &[crate::procedure::PhaseSpec]) -> Vec<serde_json::Value> {
            list.iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "description": p.description,
                        "action": p.action.as_ref().map(|a| a.kind()),
                        "has_rollback": p.rollback.is_some(),
                        "requires": p.requires.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                        "foreach": p.foreach.is_some(),
                        "parallel": p.parallel,
                        "include": p.include.as_ref().map(|i| i.procedure.clone()),
                        "phases": phases(&p.children),
                    })
                })
                .collect()
        }
        print_json(&json!({
            "name": procedure.name,
            "description": procedure.description,
            "file": procedure.file,
            "params": procedure.params,
            "phases": phases(&procedure.phases),
        }));
        return Ok(0);
    }
    println!(
        "{} — {}",
        console::style(&procedure.name).bold(),
        procedure.description.trim()
    );
    println!("file: {}\n", procedure.file);
    println!("parameters:");
    if procedure.params.is_empty() {
        println!("  (none)");
    }
    for p in &procedure.params {
        let mut facts = Vec::new();
        if p.required {
            facts.push("required".to_string());
        }
        if let Some(d) = &p.default {
            facts.push(format!("default {d}"));
        }
        if let Some(pat) = &p.pattern {
            facts.push(format!("pattern {pat}"));
        }
        if p.secret {
            facts.push("secret".to_string());
        }
        println!(
            "  {:16} {} {}",
            p.name,
            p.description,
            console::style(format!("[{}]", facts.join(", "))).dim()
        );
    }
    println!("\nphases:");
    fn tree(list: &[crate::procedure::PhaseSpec], prefix: &str) {
        for p in list {
            let path = format!("{prefix}/{}", p.id);
            let kind = match (&p.action, p.foreach.is_some()) {
                (Some(a), false) => a.kind().to_string(),
                (Some(a), true) => format!("{} for each item", a.kind()),
                (None, true) => "group for each item".to_string(),
                (None, false) if p.include.is_some() => format!(
                    "include {}",
                    p.include
                        .as_ref()
                        .map(|i| i.procedure.as_str())
                        .unwrap_or_default()
                ),
                (None, false) => {
                    if p.parallel {
                        "group (parallel)".into()
                    } else {
                        "group".into()
                    }
                }
            };
            println!(
                "  {:30} {:22} {}",
                path,
                kind,
                p.description.as_deref().unwrap_or_default()
            );
            tree(&p.children, &path);
        }
    }
    tree(&procedure.phases, "");
    Ok(0)
}

fn new_operation_id(store: &mut Store) -> Result<String, CliError> {
    let existing: Vec<String> = store.operations()?.into_iter().map(|o| o.id).collect();
    // 2026-11-21T12:42:40Z → 20261121-124240
    let stamp = format_time(now_ms())
        .replace(['-', ':', 'Z'], "")
        .replace('T', "-");
    let date = &stamp[..15];
    let mut salt = (now_ms() as u32) ^ std::process::id().rotate_left(16);
    loop {
        let id = format!("{date}-{:04x}", salt & 0xffff);
        if !existing.contains(&id) {
            return Ok(id);
        }
        salt = salt.wrapping_mul(2654435761).wrapping_add(1);
    }
}

fn fingerprint(plan_json: &[u8]) -> String {
    let digest = Sha256::digest(plan_json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn install_ctrl_c(json: bool) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(Some("interrupted".to_string()));
            if !json {
                eprintln!("\n{} stopping: no new phases start; running ones are being stopped. Press Ctrl-C again to exit at once.", console::style("⚠").yellow());
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("exiting at once; the running phase stays interrupted (`medic plan resume` continues)");
                std::process::exit(130);
            }
        }
    });
    rx
}

enum RunKind {
    Execute(PhaseId),
    Rollback(PhaseId),
}

/// What to run and how.
struct RunRequest {
    kind: RunKind,
    force: bool,
    dry_run: bool,
    reason: Option<String>,
}

/// Takes the lease, runs, releases; prints events as they come (text) or at the end (JSON).
async fn run_operation(
    ctx: &Ctx,
    actor: Actor,
    mut store: Store,
    op: Operation,
    request: RunRequest,
) -> Result<i32, CliError> {
    let RunRequest {
        kind,
        force,
        dry_run,
        reason,
    } = request;
    let collector = Arc::new(JsonCollector::default());
    let sink: Arc<dyn EventSink> = if ctx.json() {
        collector.clone()
    } else {
        Arc::new(TextRenderer::new())
    };
    let inventory = inventory_for(ctx, &store.plan(&op.id)?)?;
    if !dry_run {
        acquire_lease(&mut store, &op, &actor, reason.clone())?;
    }
    let cancel = install_ctrl_c(ctx.json());
    let op_id = op.id.clone();
    let ssh = Arc::new(SshPool::new());
    let engine = Engine::new(EngineSetup {
        store,
        inventory: inventory.clone(),
        ssh: ssh.clone(),
        operation: op,
        actor,
        reason,
        sink,
        cancel,
        force,
    })?;
    if inventory.is_none() && needs_inventory(engine.plan()) {
        let _ = engine.release();
        return Err(missing_inventory(ctx));
    }
    let result = match (&kind, dry_run) {
        (RunKind::Execute(p), true) => engine.dry_run_execute(p),
        (RunKind::Rollback(p), true) => engine.dry_run_rollback(p),
        (RunKind::Execute(p), false) => engine.execute(p).await,
        (RunKind::Rollback(p), false) => engine.rollback(p).await,
    };
    if dry_run {
        engine.dry_run_finish(&result);
        let mut store = engine.into_store();
        store.release();
    } else {
        // Release the lease whatever happened, then report.
        engine.release()?;
    }
    ssh.close_all().await;
    let outcome = result?;
    if ctx.json() {
        let events = std::mem::take(&mut *collector.events.lock().expect("events lock"));
        print_json(&json!({ "operation": op_id, "outcome": outcome, "events": events }));
    }
    Ok(outcome.exit_code())
}

async fn start_operation(ctx: &Ctx, args: &StartArgs) -> Result<i32, CliError> {
    let procedure = ctx.catalog()?.get(&args.name)?;
    let mut sets = args.set.clone();
    for item in &args.set_file {
        sets.push(read_set_file(item)?);
    }
    let params = procedure.resolve_params(&sets)?;
    let templates = Templates::new();
    // A broken inventory is reported where the plan needs it; the plan is built without it.
    let inventory = ctx.inventory().ok().flatten();
    let plan = procedure
        .build_plan(
            &params,
            &templates,
            inventory.as_ref().map(|i| i.template_value()),
            ctx.cli.max_phases,
        )
        .map_err(|e| {
            let over_limit = matches!(e, ProcedureError::TooManyPhases { .. });
            let mut err = CliError::from(e);
            if inventory.is_none() && !over_limit {
                err.message.push_str(&format!(
                    "\n(no inventory was loaded from {}; a procedure that expands over the inventory's nodes needs one: pass --inventory FILE)",
                    ctx.cli.inventory.display()
                ));
            }
            err
        })?;
    let plan_json = serde_json::to_vec(&plan).expect("plan serializes");
    let redact = |a: &str| -> String {
        match a.strip_prefix("--set=") {
            Some(rest) => format!("--set={}", redact_set(&procedure, rest)),
            None if a.contains('=') => redact_set(&procedure, a),
            None => a.to_string(),
        }
    };
    let actor = ctx.actor(redact);
    let operation = Operation {
        id: String::new(),
        procedure: procedure.name.clone(),
        description: procedure.description.clone(),
        params: params.values.clone(),
        secret_params: params.secrets.keys().cloned().collect(),
        created_at: now_ms(),
        created_by: actor.clone(),
        reason: args.reason.clone(),
        state: OperationState::Active,
        finished_at: None,
        fingerprint: fingerprint(&plan_json),
    };
    let inventory = inventory_for(ctx, &plan)?;
    if inventory.is_none() && needs_inventory(&plan) {
        return Err(missing_inventory(ctx));
    }
    if uses_kube(&plan) {
        if let Some(problem) = crate::inventory::missing_kubeconfig(inventory.as_deref()) {
            return Err(CliError::usage(problem));
        }
    }
    let problems = Engine::preview(
        operation.clone(),
        plan.clone(),
        params.clone(),
        inventory.clone(),
        Arc::new(JsonCollector::default()),
    )
    .check_targets();
    if !problems.is_empty() {
        return Err(CliError::usage(format!(
            "{} problem{} with what the plan acts on:\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )));
    }
    if args.dry_run {
        let operation = Operation {
            id: "(not created: dry run)".into(),
            ..operation
        };
        return preview(ctx, operation, plan, params, inventory);
    }
    let mut store = ctx.store(Access::Create)?;
    let id = new_operation_id(&mut store)?;
    let operation = Operation {
        id: id.clone(),
        ..operation
    };
    let mut shown_params = serde_json::Map::new();
    for (k, v) in params.template_values(false) {
        shown_params.insert(k, v);
    }
    let entry = HistoryEntry {
        seq: 0,
        time: now_ms(),
        user: actor.user.clone(),
        host: actor.host.clone(),
        pid: actor.pid,
        command: actor.command.clone(),
        reason: args.reason.clone(),
        event: "operation_created".into(),
        phase: None,
        from: None,
        to: None,
        error: None,
        forced: false,
        detail: Some(format!(
            "procedure {} with {}",
            procedure.name,
            serde_json::Value::Object(shown_params)
        )),
    };
    store.commit(
        &id,
        Commit {
            operation: Some(operation.clone()),
            plan: Some(plan_json),
            secrets: Some(params.secrets.clone()),
            history: vec![entry],
            ..Default::default()
        },
    )?;
    if !ctx.json() {
        println!(
            "{} operation {} from procedure {} (plan sha256:{})",
            console::style("created").green(),
            console::style(&id).bold(),
            procedure.name,
            &operation.fingerprint[..16]
        );
    }
    if args.manual {
        store.release();
        if ctx.json() {
            print_json(&json!({"operation": operation_json(&operation)}));
        } else {
            println!(
                "nothing runs until you say so: `medic plan` shows it, `medic plan resume` runs it"
            );
        }
        return Ok(0);
    }
    run_operation(
        ctx,
        actor,
        store,
        operation,
        RunRequest {
            kind: RunKind::Execute(PhaseId::root()),
            force: false,
            dry_run: false,
            reason: args.reason.clone(),
        },
    )
    .await
}

/// The most `--set-file` reads: far more than any token or command line, and a bound on
/// what a wrong path (`/dev/zero`, a disk image) can cost.
const SET_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// `--set-file key=PATH` as `key=VALUE`: a regular file of at most 1 MiB of UTF-8, one
/// trailing newline dropped.
fn read_set_file(item: &str) -> Result<String, CliError> {
    use std::io::Read as _;
    let Some((key, path)) = item.split_once('=') else {
        return Err(CliError::usage(format!(
            "--set-file `{item}` must have the form key=PATH"
        )));
    };
    if key.trim().is_empty() {
        return Err(CliError::usage(format!(
            "--set-file `{item}` has an empty parameter name; use key=PATH"
        )));
    }
    if path.is_empty() {
        return Err(CliError::usage(format!(
            "--set-file {key}: the path is empty; use {key}=PATH"
        )));
    }
    let cannot = |e: std::io::Error| {
        CliError::usage(format!(
            "--set-file {key}: cannot read {path}: {e}; give a readable file"
        ))
    };
    // Checked before opening: opening a FIFO blocks until a writer comes, a device never ends.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, pipe or socket)"
        };
        return Err(CliError::usage(format!(
            "--set-file {key}: {path} is {what}; give a regular file (or use --set {key}=VALUE)"
        )));
    }
    let too_big = || {
        CliError::usage(format!(
            "--set-file {key}: {path} is larger than 1 MiB; a parameter value must be smaller"
        ))
    };
    if meta.len() > SET_FILE_MAX_BYTES {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    // The file may grow between the check and the read: never read more than the limit.
    let mut bytes = Vec::new();
    file.take(SET_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > SET_FILE_MAX_BYTES {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        CliError::usage(format!(
            "--set-file {key}: {path} is not UTF-8 text (invalid byte at offset {}); give a text file",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    Ok(format!("{key}={value}"))
}

fn preview(
    ctx: &Ctx,
    operation: Operation,
    plan: crate::action::Plan,
    params: Params,
    inventory: Option<Arc<Inventory>>,
) -> Result<i32, CliError> {
    let collector = Arc::new(JsonCollector::default());
    let sink: Arc<dyn EventSink> = if ctx.json() {
        collector.clone()
    } else {
        Arc::new(TextRenderer::new())
    };
    let engine = Engine::preview(operation.clone(), plan, params, inventory, sink);
    let result = engine.dry_run_execute(&PhaseId::root());
    engine.dry_run_finish(&result);
    let outcome = result?;
    if ctx.json() {
        let events = std::mem::take(&mut *collector.events.lock().expect("events lock"));
        print_json(
            &json!({ "operation": operation_json(&operation), "outcome": outcome, "events": events }),
        );
    }
    Ok(0)
}

fn list_operations(ctx: &Ctx) -> Result<i32, CliError> {
    let mut store = match Store::open_with(&ctx.cli.state_dir, Access::Read) {
        Ok(store) => store,
        // Listing nothing is the truth here, but say why rather than "no operations yet".
        Err(e) if e.is_missing() => {
            if ctx.json() {
                print_json(&json!({ "operations": [], "note": e.to_string() }));
            } else {
                println!("no operations: {e}");
            }
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let ops = store.operations()?;
    let mut rows = Vec::new();
    for op in &ops {
        let plan = store.plan(&op.id)?;
        let records = store.records(&op.id)?;
        let leaves = plan.leaves().count();
        let done = plan
            .leaves()
            .filter(|l| {
                records
                    .get(&plan.node(*l).id)
                    .is_some_and(|r| r.state == crate::plan::PhaseState::Completed)
            })
            .count();
        let lease = store.lease(&op.id)?;
        let running = lease.as_ref().is_some_and(|l| l.is_alive());
        rows.push((op, done, leaves, running));
    }
    store.release();
    if ctx.json() {
        let list: Vec<_> = rows
            .iter()
            .map(|(op, done, leaves, running)| {
                let mut v = operation_json(op);
                v["progress"] = json!({"completed": done, "leaves": leaves});
                v["executing"] = json!(running);
                v
            })
            .collect();
        print_json(&json!({ "operations": list }));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no operations yet; start one with `medic start NAME` (see `medic procedures`)");
        return Ok(0);
    }
    println!(
        "{}",
        console::style(format!(
            "{:26} {:26} {:10} {:9} {:20} {}",
            "OPERATION", "PROCEDURE", "STATE", "PROGRESS", "CREATED", "BY / REASON"
        ))
        .bold()
    );
    for (op, done, leaves, running) in rows {
        let state = if running {
            "executing"
        } else {
            op.state.as_str()
        };
        println!(
            "{:26} {:26} {:10} {:9} {:20} {}@{}{}",
            op.id,
            op.procedure,
            state,
            format!("{done}/{leaves}"),
            format_time(op.created_at),
            op.created_by.user,
            op.created_by.host,
            op.reason
                .as_ref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

/// Picks the operation: explicit (ID or unique prefix), else the single active one; read-only
/// commands fall back to the newest operation when none is active.
fn select_operation(
    store: &mut Store,
    wanted: Option<&str>,
    read_only: bool,
) -> Result<Operation, CliError> {
    if wanted.is_some_and(|w| w.trim().is_empty()) {
        return Err(CliError::usage(
            "--operation is empty (an unset shell variable?); give an operation ID, or leave --operation out to use the active one",
        ));
    }
    let ops = store.operations()?;
    if let Some(w) = wanted {
        if let Some(op) = ops.iter().find(|o| o.id == w) {
            return Ok(op.clone());
        }
        let matches: Vec<&Operation> = ops.iter().filter(|o| o.id.starts_with(w)).collect();
        return match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(CliError::usage(format!(
                "no operation `{w}`; run `medic operations` to list them"
            ))),
            many => Err(CliError::usage(format!(
                "`{w}` matches several operations: {}; give more of the ID",
                many.iter()
                    .map(|o| o.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    let active: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.state == OperationState::Active)
        .collect();
    match active.as_slice() {
        [one] => Ok((*one).clone()),
        [] => match ops.last() {
            Some(last) if read_only => Ok(last.clone()),
            _ => Err(CliError::usage(
                "no active operation; start one with `medic start NAME` (see `medic procedures`)",
            )),
        },
        many => {
            let mut msg =
                String::from("several operations are active; choose one with --operation:");
            for o in many {
                msg.push_str(&format!(
                    "\n  {}  {}  created {}",
                    o.id,
                    o.procedure,
                    format_time(o.created_at)
                ));
            }
            Err(CliError::usage(msg))
        }
    }
}

async fn plan_command(ctx: &Ctx, args: &PlanArgs) -> Result<i32, CliError> {
    let read_only = matches!(
        args.command,
        None | Some(PlanCommand::Export { .. })
            | Some(PlanCommand::Logs { .. })
            | Some(PlanCommand::History)
    );
    // A malformed --phase is refused before the state is touched.
    match &args.command {
        Some(PlanCommand::Execute(p)) | Some(PlanCommand::Rollback(p)) => {
            phase_arg(&p.phase)?;
        }
        Some(PlanCommand::Logs { phase: Some(p) }) => {
            phase_arg(p)?;
        }
        _ => {}
    }
    let dry_run = match &args.command {
        Some(PlanCommand::Execute(p)) | Some(PlanCommand::Rollback(p)) => p.run.dry_run,
        Some(PlanCommand::Resume(r)) => r.dry_run,
        _ => false,
    };
    let mut store = ctx.store(if read_only || dry_run {
        Access::Read
    } else {
        Access::Write
    })?;
    let op = select_operation(&mut store, args.operation.as_deref(), read_only)?;
    match &args.command {
        None if args.tail => {
            store.release();
            tail(ctx, &op.id).await
        }
        None => {
            show_plan(ctx, &mut store, &op, args.short)?;
            Ok(0)
        }
        Some(PlanCommand::Execute(p)) => {
            let kind = RunKind::Execute(phase_arg(&p.phase)?);
            run_plan_command(ctx, store, op, kind, &p.run, args).await
        }
        Some(PlanCommand::Rollback(p)) => {
            let kind = RunKind::Rollback(phase_arg(&p.phase)?);
            run_plan_command(ctx, store, op, kind, &p.run, args).await
        }
        Some(PlanCommand::Resume(r)) => {
            run_plan_command(ctx, store, op, RunKind::Execute(PhaseId::root()), r, args).await
        }
        Some(PlanCommand::Complete) => complete(ctx, &mut store, op, args.reason.clone()),
        Some(PlanCommand::Export { format }) => export(ctx, &mut store, &op, *format),
        Some(PlanCommand::Logs { phase }) => logs(ctx, &mut store, &op, phase.as_deref()),
        Some(PlanCommand::History) => history(ctx, &mut store, &op),
    }
}

/// A `--phase` value: exactly one phase ID (see [`PhaseId::parse_input`]).
fn phase_arg(text: &str) -> Result<PhaseId, CliError> {
    PhaseId::parse_input(text).map_err(|e| CliError::usage(format!("--phase: {e}")))
}

async fn run_plan_command(
    ctx: &Ctx,
    store: Store,
    op: Operation,
    kind: RunKind,
    run: &RunArgs,
    args: &PlanArgs,
) -> Result<i32, CliError> {
    let request = RunRequest {
        kind,
        force: run.force,
        dry_run: run.dry_run,
        reason: args.reason.clone(),
    };
    run_operation(ctx, ctx.actor(|a| a.to_string()), store, op, request).await
}

fn show_plan(ctx: &Ctx, store: &mut Store, op: &Operation, short: bool) -> Result<(), CliError> {
    let plan = store.plan(&op.id)?;
    let records = store.records(&op.id)?;
    let lease = store.lease(&op.id)?;
    store.release();
    let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
    let view = PlanView {
        operation: op,
        plan: &plan,
        records: &records,
        lease: lease.as_ref(),
        interrupted: &interrupted,
    };
    if ctx.json() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(view.json_string().as_bytes());
        let _ = writeln!(out);
    } else {
        print!("{}", view.to_text(short));
    }
    Ok(())
}

async fn tail(ctx: &Ctx, op_id: &str) -> Result<i32, CliError> {
    let mut last = String::new();
    loop {
        let mut store = ctx.store(Access::Read)?;
        let op = store.operation(op_id)?;
        let plan = store.plan(op_id)?;
        let records = store.records(op_id)?;
        let lease = store.lease(op_id)?;
        store.release();
        let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
        let view = PlanView {
            operation: &op,
            plan: &plan,
            records: &records,
            lease: lease.as_ref(),
            interrupted: &interrupted,
        };
        let rendered = if ctx.json() {
            view.json_string()
        } else {
            view.to_text(false)
        };
        if rendered != last {
            println!("{rendered}");
            last = rendered;
        }
        let states = plan.states(&records);
        let running = lease.as_ref().is_some_and(|l| l.is_alive());
        if !running {
            let failed =
                states.contains(&crate::plan::PhaseState::Failed) || !interrupted.is_empty();
            return Ok(if failed || op.state == OperationState::Failed {
                1
            } else {
                0
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn complete(
    ctx: &Ctx,
    store: &mut Store,
    mut op: Operation,
    reason: Option<String>,
) -> Result<i32, CliError> {
    if op.state != OperationState::Active {
        if ctx.json() {
            print_json(&json!({"operation": operation_json(&op), "changed": false}));
        } else {
            println!("operation {} is already {}", op.id, op.state.as_str());
        }
        return Ok(0);
    }
    if let Some(lease) = store.lease(&op.id)?.filter(|l| l.is_alive()) {
        return Err(EngineError::LeaseHeld {
            operation: op.id.clone(),
            lease: Box::new(lease),
        }
        .into());
    }
    let plan = store.plan(&op.id)?;
    let records = store.records(&op.id)?;
    let states = plan.states(&records);
    let unfinished: Vec<String> = plan
        .leaves()
        .filter(|l| states[*l] != crate::plan::PhaseState::Completed)
        .map(|l| format!("{} ({})", plan.node(l).id, states[l]))
        .collect();
    op.state = if unfinished.is_empty() {
        OperationState::Completed
    } else {
        OperationState::Failed
    };
    op.finished_at = Some(now_ms());
    let actor = ctx.actor(|a| a.to_string());
    let entry = HistoryEntry {
        seq: 0,
        time: now_ms(),
        user: actor.user,
        host: actor.host,
        pid: actor.pid,
        command: actor.command,
        reason,
        event: format!("operation_{}", op.state.as_str()),
        phase: None,
        from: None,
        to: None,
        error: None,
        forced: false,
        detail: (!unfinished.is_empty())
            .then(|| format!("not completed: {}", unfinished.join(", "))),
    };
    store.commit(
        &op.id,
        Commit {
            operation: Some(op.clone()),
            history: vec![entry],
            ..Default::default()
        },
    )?;
    store.release();
    if ctx.json() {
        print_json(
            &json!({"operation": operation_json(&op), "changed": true, "unfinished": unfinished}),
        );
    } else if unfinished.is_empty() {
        println!(
            "{} operation {} completed",
            console::style("✔").green(),
            op.id
        );
    } else {
        println!(
            "{} operation {} marked failed; {} phase(s) not completed:",
            console::style("✘").red(),
            op.id,
            unfinished.len()
        );
        for u in unfinished.iter().take(20) {
            println!("  {u}");
        }
    }
    Ok(0)
}

fn export(
    ctx: &Ctx,
    store: &mut Store,
    op: &Operation,
    format: ExportFormat,
) -> Result<i32, CliError> {
    let plan = store.plan(&op.id)?;
    let records = store.records(&op.id)?;
    let lease = store.lease(&op.id)?;
    let vars = store.vars(&op.id)?;
    // Secret values are never exported: only their names go in, with placeholders (secret
    // parameters, and values captured from phases that used a secret).
    let params = Params {
        values: op.params.clone(),
        secrets: op
            .secret_params
            .iter()
            .cloned()
            .chain(store.secrets(&op.id)?.into_keys())
            .map(|k| (k, String::new()))
            .collect(),
    };
    store.release();
    let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
    let view = PlanView {
        operation: op,
        plan: &plan,
        records: &records,
        lease: lease.as_ref(),
        interrupted: &interrupted,
    };
    // The export shows per-node commands when the inventory is at hand; it still works without.
    let inventory = ctx.inventory().ok().flatten();
    let export = Export {
        view,
        inventory: inventory.as_deref(),
        params: &params,
        vars: &vars,
    };
    match (format, ctx.json()) {
        (ExportFormat::Json, _) | (_, true) => println!("{}", export.json_string()),
        (ExportFormat::Markdown, false) => print!("{}", export.to_markdown()),
        (ExportFormat::Dot, false) => print!("{}", export.to_dot()),
    }
    Ok(0)
}

/// Prints the operation's log batch by batch: the database is released while each batch is
/// written, so a slow reader (a pager) never holds it, and memory stays at one batch.
fn logs(
    ctx: &Ctx,
    store: &mut Store,
    op: &Operation,
    phase: Option<&str>,
) -> Result<i32, CliError> {
    const BATCH_LINES: usize = 4096;
    let plan = store.plan(&op.id)?;
    let filter = match phase.map(phase_arg).transpose()? {
        Some(f) => {
            let Some(i) = plan.find(&f) else {
                store.release();
                return Err(CliError::usage(format!(
                    "no phase {f} in operation {}; run `medic plan` to see the phase IDs",
                    op.id
                )));
            };
            let ids: std::collections::HashSet<PhaseId> =
                plan.subtree(i).map(|d| plan.node(d).id.clone()).collect();
            Some(ids)
        }
        None => None,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    if ctx.json() {
        let _ = write!(out, "{{\n  \"lines\": [");
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (lines, next) = store.logs_after(&op.id, after.as_deref(), BATCH_LINES)?;
        store.release();
        let mut selected = lines
            .iter()
            .filter(|l| filter.as_ref().is_none_or(|ids| ids.contains(&l.phase)));
        let written = if ctx.json() {
            selected.try_for_each(|l| {
                let sep = if std::mem::take(&mut first) { "" } else { "," };
                let line = serde_json::to_string(l).expect("log lines serialize");
                write!(out, "{sep}\n    {line}")
            })
        } else {
            selected.try_for_each(|l| write_log_line(&mut out, l))
        };
        // A closed pipe (`| head`) ends the listing quietly.
        if written.is_err() {
            return Ok(0);
        }
        match next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    if ctx.json() {
        let _ = writeln!(out, "{}]\n}}", if first { "" } else { "\n  " });
    }
    let _ = out.flush();
    Ok(0)
}

fn write_log_line(out: &mut impl std::io::Write, l: &crate::store::LogLine) -> std::io::Result<()> {
    let stream = match l.stream {
        crate::action::Stream::Stdout => "out",
        crate::action::Stream::Stderr => "err",
        crate::action::Stream::Medic => "medic",
    };
    writeln!(
        out,
        "{} {} [{stream}] {}",
        &format_time(l.time)[11..19],
        l.phase,
        l.text
    )
}

fn history(ctx: &Ctx, store: &mut Store, op: &Operation) -> Result<i32, CliError> {
    let entries = store.history(&op.id)?;
    store.release();
    if ctx.json() {
        print_json(&json!({ "history": entries }));
        return Ok(0);
    }
    for e in entries {
        let change = match (&e.from, &e.to) {
            (Some(f), Some(t)) => format!(" {f} → {t}"),
            _ => String::new(),
        };
        let mut line = format!(
            "{:>4} {} {}@{} pid {} {}{}{}",
            e.seq,
            format_time(e.time),
            e.user,
            e.host,
            e.pid,
            console::style(&e.event).bold(),
            e.phase
                .as_ref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default(),
            change
        );
        if e.forced {
            line.push_str(&format!(" {}", console::style("[forced]").yellow()));
        }
        println!("{line}");
        if let Some(d) = &e.detail {
            println!("       {d}");
        }
        if let Some(err) = &e.error {
            println!("       error: {err}");
        }
        if let Some(r) = &e.reason {
            println!("       reason: {r}");
        }
        println!("       $ {}", e.command);
    }
    Ok(0)
}
