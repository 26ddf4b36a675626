//! The command line: parse arguments, call the library, print. Nothing else.
//!
//! 1. [`main_with_args`] parses (`args`), starts the runtime and maps a [`CliError`] to its
//!    exit code.
//! 2. `run` dispatches to one file per command group: `procedures`, `start`, `operations`,
//!    `plan`, `drill`, `complete` (completion scripts, man pages).
//! 3. Creating, selecting and completing an operation is library code (`crate::operation`).
//!
//! Exit codes: 0 success, 1 a phase or check failed, 2 usage or input error, 3 refused for
//! safety (unmet requirement, lease held, guard).

mod approve;
mod args;
mod complete;
mod confirm;
mod detach;
mod drill;
mod notify;
mod operations;
mod plan;
mod procedures;
mod report;
mod schema;
mod set;
mod signals;
mod ssh;
mod start;
mod state;
mod status;
mod status_watch;
mod stop;
mod tail;

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use serde_json::json;

use crate::engine::EngineError;
use crate::inventory::Inventory;
use crate::operation::OperationError;
use crate::procedure::{Catalog, ProcedureError};
use crate::store::{hostname, username, Access, Actor, Store, StoreError};
use args::{Cli, Command, DrillCommand, Format, ProceduresCommand};

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: i32,
    pub(crate) message: String,
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

impl From<OperationError> for CliError {
    fn from(e: OperationError) -> Self {
        CliError {
            code: e.exit_code(),
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
    let json = cli.output != Format::Text;
    YAML_OUTPUT.store(cli.output == Format::Yaml, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli, args)) {
        Ok(code) => code,
        Err(e) => {
            let error = json!({"error": e.message, "exit_code": e.code});
            if yaml_output() {
                print_json(&error);
            } else if json {
                println!("{error}");
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
    /// What each interrupted leaf may have done (`crate::operation::hints`), for the hints
    /// under the plan table; the inventory is read only when something was interrupted.
    fn may_have_done(
        &self,
        store: &mut Store,
        op: &crate::store::Operation,
        plan: &crate::action::Plan,
        records: &std::collections::HashMap<crate::phase_id::PhaseId, crate::plan::PhaseRecord>,
        interrupted: &std::collections::BTreeSet<crate::phase_id::PhaseId>,
    ) -> Result<std::collections::BTreeMap<crate::phase_id::PhaseId, Vec<String>>, CliError> {
        if interrupted.is_empty() {
            return Ok(Default::default());
        }
        let inventory = self.inventory().ok().flatten();
        Ok(crate::operation::hints::interrupted_actions(
            store,
            op,
            plan,
            records,
            interrupted,
            inventory.as_deref(),
        )?)
    }

    /// Machine output: `-o json` or `-o yaml` (the same data; see [`print_json`]).
    fn json(&self) -> bool {
        self.cli.output != Format::Text
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
        crate::ssh::use_medic_known_hosts(&self.cli.state_dir);
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
        Err(e)
            if needs_inventory(plan)
                || uses_kube(plan)
                || notify::has_cluster_rules(&ctx.cli.inventory) =>
        {
            Err(e)
        }
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
    state::select_backend(&ctx.cli)?;
    signals::listen(&ctx.cli.command, ctx.json());
    match &ctx.cli.command {
        Command::Procedures { show: None } => procedures::list(&ctx),
        Command::Procedures {
            show: Some(ProceduresCommand::Show { name }),
        } => procedures::show(&ctx, name),
        Command::Procedures {
            show: Some(ProceduresCommand::Lint { paths, strict }),
        } => procedures::lint(&ctx, paths, *strict),
        Command::Start(start) => start::start_operation(&ctx, start).await,
        Command::Operations => operations::list(&ctx),
        Command::Plan(plan) => plan::plan_command(&ctx, plan).await,
        Command::Drill {
            command: DrillCommand::Apiserver { port, seed },
            ..
        } => drill::run_apiserver(*port, seed.as_deref()).await,
        Command::Drill { dir, command } => {
            drill::drill_command(&ctx, dir.as_deref(), command).await
        }
        Command::Completions { shell } => complete::completions(*shell),
        Command::Man { dir } => complete::man_pages(dir),
        Command::Complete { what, operation } => {
            complete::candidates(&ctx, *what, operation.as_deref())
        }
        Command::Schema { document } => schema::print(*document),
        Command::Attach { operation } => tail::attach(&ctx, operation.as_deref()).await,
        Command::Ssh { command } => ssh::ssh_command(&ctx, command),
        Command::Status(args) => status::status(&ctx, args).await,
        Command::Report(args) => report::report(&ctx, args).await,
        Command::State { command } => state::state_command(&ctx, command),
    }
}

/// Whether machine output is YAML (`-o yaml`) rather than JSON; set once per process by
/// [`main_with_args`]. A process-wide flag rather than a `Ctx` field because the error path
/// has no `Ctx`, and so every printer of machine output (`print_json` and its callers in each
/// command group) follows `-o` without being handed it.
static YAML_OUTPUT: AtomicBool = AtomicBool::new(false);

fn yaml_output() -> bool {
    YAML_OUTPUT.load(Ordering::Relaxed)
}

/// Prints machine output: pretty JSON, or the same data as YAML under `-o yaml`.
fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if yaml_output() {
        let _ = out.write_all(to_yaml(value).as_bytes());
    } else {
        let _ = serde_json::to_writer_pretty(&mut out, value);
        let _ = writeln!(out);
    }
}

/// A JSON document rendered elsewhere (`render::PlanView`, `render::Export`) in the chosen
/// format: unchanged for `-o json`, the same data as YAML (ending in a newline) for `-o yaml`.
fn json_text_as_output(json: String) -> String {
    if !yaml_output() {
        return json;
    }
    let value: serde_json::Value = serde_json::from_str(&json).expect("rendered JSON parses");
    to_yaml(&value)
}

/// One line per value, as in the JSON (no `>` folding of long strings), so `grep` finds a
/// message whole.
fn to_yaml(value: &impl serde::Serialize) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(value, options).expect("JSON values serialize as YAML")
}
