//! `medic plan` and its subcommands: show, tail, execute, resume, rollback, complete, export,
//! logs, history.
//!
//! Every subcommand selects its operation with `crate::operation::select`; execute, resume
//! and rollback run it through [`run_operation`] (lease, engine, renderer), which `medic start`
//! uses too.

use std::io::Write as _;
use std::sync::Arc;

use serde_json::json;

use super::args::{ExportFormat, PlanArgs, PlanCommand, RunArgs};
use super::{
    inventory_for, json_text_as_output, missing_inventory, needs_inventory, print_json, to_yaml,
    yaml_output, CliError, Ctx,
};
use crate::engine::{acquire_lease, interrupted_phases, Control, Engine, EngineSetup};
use crate::events::EventSink;
use crate::operation::{self, Completion};
use crate::plan::PhaseId;
use crate::procedure::Params;
use crate::render::{
    operation_json, review_json, review_markdown, with_review, Export, JsonCollector, PlanView,
    TextRenderer,
};
use crate::ssh::SshPool;
use crate::store::{format_time, Access, Actor, Operation, Store};

pub(super) enum RunKind {
    Execute(PhaseId),
    Rollback(PhaseId),
}

/// What to run and how.
pub(super) struct RunRequest {
    pub(super) kind: RunKind,
    pub(super) force: bool,
    pub(super) dry_run: bool,
    pub(super) reason: Option<String>,
    /// `--yes`: confirm every `confirm: true` phase.
    pub(super) yes: bool,
}

/// Takes the lease, runs, releases; prints events as they come (text) or at the end (JSON).
pub(super) async fn run_operation(
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
        yes,
    } = request;
    let collector = Arc::new(JsonCollector::default());
    let sink: Arc<dyn EventSink> = if ctx.json() {
        collector.clone()
    } else {
        Arc::new(TextRenderer::new())
    };
    let inventory = inventory_for(ctx, &store.plan(&op.id)?)?;
    let (control, handle) = Control::new();
    if !dry_run {
        super::approve::gate(&mut store, &op, &actor, force)?;
        super::signals::connect(handle);
        acquire_lease(&mut store, &op, &actor, reason.clone())?;
    }
    let op_id = op.id.clone();
    let (sink, notices) = if dry_run {
        (sink, None)
    } else {
        super::notify::wrap(sink, inventory.as_deref(), &mut store, &op, &actor)?
    };
    let notify_actor = actor.clone();
    let ssh = Arc::new(SshPool::new());
    let mut engine = Engine::new(EngineSetup {
        store,
        inventory: inventory.clone(),
        ssh: ssh.clone(),
        operation: op,
        actor,
        reason,
        sink: super::detach::ReleaseOnStart::wrap(sink),
        control,
        force,
    })?;
    engine.set_confirmer(super::confirm::confirmer(yes));
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
        let store = engine.release()?;
        let refusal = result.as_ref().err().map(|e| e.to_string());
        super::notify::finish(notices, refusal, store, &op_id, &notify_actor).await?;
    }
    ssh.close_all().await;
    let outcome = result?;
    if ctx.json() {
        let events = std::mem::take(&mut *collector.events.lock().expect("events lock"));
        print_json(&json!({ "operation": op_id, "outcome": outcome, "events": events }));
    }
    Ok(outcome.exit_code())
}

pub(super) async fn plan_command(ctx: &Ctx, args: &PlanArgs) -> Result<i32, CliError> {
    let read_only = matches!(
        args.command,
        None | Some(PlanCommand::Export { .. })
            | Some(PlanCommand::Logs { .. })
            | Some(PlanCommand::History)
            | Some(PlanCommand::Approvals)
            | Some(PlanCommand::Drift)
    );
    // A malformed --phase is refused before the state is touched.
    match &args.command {
        Some(PlanCommand::Execute(p)) | Some(PlanCommand::Rollback(p)) => {
            phase_arg(&p.phase)?;
        }
        Some(PlanCommand::Logs { phase: Some(p) }) => {
            phase_arg(p)?;
        }
        Some(PlanCommand::Set(s)) => super::set::check_args(s, args.reason.as_deref())?,
        Some(PlanCommand::Approve) => super::approve::check_args(args.reason.as_deref())?,
        _ => {}
    }
    let dry_run = match &args.command {
        Some(PlanCommand::Execute(p)) | Some(PlanCommand::Rollback(p)) => p.run.dry_run,
        Some(PlanCommand::Resume(r)) => r.dry_run,
        _ => false,
    };
    if let Some(code) = start_detached(ctx, args)? {
        return Ok(code);
    }
    let mut store = ctx.store(if read_only || dry_run {
        Access::Read
    } else {
        Access::Write
    })?;
    let op = operation::select(&mut store, args.operation.as_deref(), read_only)?;
    match &args.command {
        None if args.tail => {
            store.release();
            super::tail::tail(ctx, &op.id).await
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
        Some(PlanCommand::Set(s)) => super::set::plan_set(ctx, &mut store, &op, s, args),
        Some(PlanCommand::Stop { now }) => {
            super::stop::stop(ctx, store, &op, args.reason.clone(), *now).await
        }
        Some(PlanCommand::Approve) => super::approve::approve(ctx, store, &op, args).await,
        Some(PlanCommand::Approvals) => super::approve::approvals(ctx, &mut store, &op),
        Some(PlanCommand::Drift) => super::approve::drift(ctx, store, &op).await,
    }
}

/// `--detach` on execute, rollback or resume: the same command, run in its own session
/// (`detach.rs`); `None` when this process is to run it.
fn start_detached(ctx: &Ctx, args: &PlanArgs) -> Result<Option<i32>, CliError> {
    let detach = match &args.command {
        Some(PlanCommand::Execute(p)) | Some(PlanCommand::Rollback(p)) => p.run.detach,
        Some(PlanCommand::Resume(r)) => r.detach,
        _ => false,
    };
    if !detach || super::detach::is_detached() {
        return Ok(None);
    }
    let mut store = ctx.store(Access::Read)?;
    let op = operation::select(&mut store, args.operation.as_deref(), false)?;
    store.release();
    let argv: Vec<std::ffi::OsString> = ctx.args.iter().skip(1).map(Into::into).collect();
    super::detach::run_detached(ctx, &argv, &op.id).map(Some)
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
        yes: run.yes,
    };
    run_operation(ctx, ctx.actor(|a| a.to_string()), store, op, request).await
}

fn show_plan(ctx: &Ctx, store: &mut Store, op: &Operation, short: bool) -> Result<(), CliError> {
    let plan = store.plan(&op.id)?;
    let records = store.records(&op.id)?;
    let lease = store.lease(&op.id)?;
    let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
    let may_have_done = ctx.may_have_done(store, op, &plan, &records, &interrupted)?;
    store.release();
    let view = PlanView {
        operation: op,
        plan: &plan,
        records: &records,
        lease: lease.as_ref(),
        interrupted: &interrupted,
        may_have_done: &may_have_done,
    };
    // Streamed through one buffer: no copy of a 10,000-row table or document in memory.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    if ctx.json() && !yaml_output() {
        let _ = view.write_json(&mut out);
        let _ = writeln!(out);
    } else if ctx.json() {
        let text = json_text_as_output(view.json_string());
        let _ = out.write_all(text.trim_end().as_bytes());
        let _ = writeln!(out);
    } else {
        view.write_text(&mut FmtToIo(&mut out), short);
    }
    let _ = out.flush();
    Ok(())
}

/// Lets the plan table (written with `std::fmt::Write`) go straight to an `io::Write`.
struct FmtToIo<'a, W: std::io::Write>(&'a mut W);

impl<W: std::io::Write> std::fmt::Write for FmtToIo<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| std::fmt::Error)
    }
}

/// `medic plan complete`: closes the operation (`crate::operation::complete`) and says how.
fn complete(
    ctx: &Ctx,
    store: &mut Store,
    op: Operation,
    reason: Option<String>,
) -> Result<i32, CliError> {
    let actor = ctx.actor(|a| a.to_string());
    let (op, unfinished) = match operation::complete(store, op, &actor, reason)? {
        Completion::AlreadyClosed(op) => {
            if ctx.json() {
                print_json(&json!({"operation": operation_json(&op), "changed": false}));
            } else {
                println!("operation {} is already {}", op.id, op.state.as_str());
            }
            return Ok(0);
        }
        Completion::Closed {
            operation,
            unfinished,
        } => (operation, unfinished),
    };
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
    let history = match format {
        ExportFormat::Html => store.history(&op.id)?,
        _ => Vec::new(),
    };
    // Secret values are never exported: only their names go in, with placeholders (secret
    // parameters, and values captured from phases that used a secret).
    let params = Params::shown(
        op.params.clone(),
        op.secret_params
            .iter()
            .cloned()
            .chain(store.secrets(&op.id)?.into_keys()),
    );
    let review = store.review(&op.id)?;
    store.release();
    let counts = crate::operation::approve::counts(&review, op);
    let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
    let view = PlanView {
        operation: op,
        plan: &plan,
        records: &records,
        lease: lease.as_ref(),
        interrupted: &interrupted,
        may_have_done: &Default::default(),
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
        (ExportFormat::Json, _) | (_, true) => {
            let json = with_review(export.json_string(), review_json(&review, op, &counts));
            println!("{}", json_text_as_output(json).trim_end())
        }
        (ExportFormat::Markdown, false) => print!(
            "{}{}",
            export.to_markdown(),
            review_markdown(&review, &counts)
        ),
        (ExportFormat::Dot, false) => print!("{}", export.to_dot()),
        (ExportFormat::Html, false) => {
            print!(
                "{}",
                export.to_html(&history, &review_sections(&review, &counts))
            )
        }
        (ExportFormat::Svg, false) => print!("{}", export.to_svg()),
    }
    Ok(0)
}

/// The sections of the HTML export besides the plan itself: the approvals and the facts
/// recorded for the drift gate (`render::review_sections`, plain text that the page escapes).
fn review_sections(review: &crate::store::Review, counts: &[bool]) -> Vec<crate::render::Section> {
    crate::render::review_sections(review, counts)
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
    let yaml = yaml_output();
    if yaml {
        let _ = write!(out, "lines:");
    } else if ctx.json() {
        let _ = write!(out, "{{\n  \"lines\": [");
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (lines, next) = store.logs_after(&op.id, after.as_deref(), BATCH_LINES)?;
        store.release();
        let mut selected = lines
            .iter()
            .filter(|l| filter.as_ref().is_none_or(|ids| ids.contains(&l.phase)));
        let written = if yaml {
            // Each line as a one-item block sequence: together, the list under `lines:`.
            selected.try_for_each(|l| {
                first = false;
                let item = to_yaml(&[l]);
                write!(out, "\n{}", item.trim_end())
            })
        } else if ctx.json() {
            selected.try_for_each(|l| {
                let sep = if std::mem::take(&mut first) { "" } else { "," };
                let line = serde_json::to_string(l).expect("log lines serialize");
                write!(out, "{sep}\n    {line}")
            })
        } else {
            selected.try_for_each(|l| super::tail::write_log_line(&mut out, l))
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
    if yaml {
        let _ = writeln!(out, "{}", if first { " []" } else { "" });
    } else if ctx.json() {
        let _ = writeln!(out, "{}]\n}}", if first { "" } else { "\n  " });
    }
    let _ = out.flush();
    Ok(0)
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
