//! `medic start`: read `--set`/`--set-file`, build and check the plan, then preview it (dry
//! run) or create the operation and run it.
//!
//! 1. Read the parameters (`--set`, `--set-file`) and build the plan.
//! 2. Check what the plan acts on (inventory, kubeconfig, target nodes).
//! 3. Dry run: preview the plan and stop. Otherwise create the operation
//!    (`crate::operation::create`), then run it unless `--manual`.

use std::sync::Arc;

use serde_json::json;

use super::args::StartArgs;
use super::plan::{run_operation, RunKind, RunRequest};
use super::{
    inventory_for, missing_inventory, needs_inventory, print_json, uses_kube, CliError, Ctx,
};
use crate::engine::Engine;
use crate::events::EventSink;
use crate::inventory::Inventory;
use crate::operation;
use crate::plan::PhaseId;
use crate::procedure::{redact_set, Params, Procedure, ProcedureError};
use crate::render::{operation_json, JsonCollector, TextRenderer};
use crate::store::{Access, Operation};
use crate::template::Templates;

/// `medic start`: each step below, then (unless `--manual`) runs the whole plan.
pub(super) async fn start_operation(ctx: &Ctx, args: &StartArgs) -> Result<i32, CliError> {
    let procedure = ctx.catalog()?.get(&args.name)?;
    let mut sets = args.set.clone();
    for item in &args.set_file {
        sets.push(read_set_file(item)?);
    }
    let params = procedure.resolve_params(&sets)?;
    let plan = build_plan(ctx, &procedure, &params)?;
    let actor = ctx.actor(|a| redact_arg(&procedure, a));
    let mut new = operation::draft(
        &procedure,
        &params,
        &plan,
        actor.clone(),
        args.reason.clone(),
    );
    let inventory = check_targets(ctx, &new.operation, &plan, &params)?;
    if args.dry_run {
        let operation = Operation {
            id: "(not created: dry run)".into(),
            ..new.operation
        };
        return preview(ctx, operation, plan, params, inventory);
    }
    let mut store = ctx.store(Access::Create)?;
    let forced = operation::collide::admit(
        &mut store,
        &mut new,
        &plan,
        &params,
        inventory.as_deref(),
        args.force,
    )?;
    let operation = operation::create(&mut store, new)?;
    let policy = operation::approve::policy_for(&procedure, inventory.as_deref());
    store.release();
    let of = crate::engine::FactsOf {
        op: &operation,
        params: &params,
        vars: &serde_json::Map::new(),
    };
    let facts = crate::engine::read_facts(
        inventory.as_deref(),
        &plan,
        &of,
        &crate::ssh::SshPool::new(),
        "start",
    )
    .await;
    operation::approve::record_start(&mut store, &operation, policy, Some(facts))?;
    super::set::say_forced(&forced);
    if !ctx.json() {
        println!(
            "{} operation {} from procedure {} (plan sha256:{})",
            console::style("created").green(),
            console::style(&operation.id).bold(),
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
    if args.detach {
        store.release();
        return super::detach::run_detached(
            ctx,
            &resume_args(ctx, args, &operation.id),
            &operation.id,
        );
    }
    let request = RunRequest {
        kind: RunKind::Execute(PhaseId::root()),
        force: false,
        dry_run: false,
        reason: args.reason.clone(),
        yes: args.yes,
    };
    run_operation(ctx, actor, store, operation, request).await
}

/// `medic plan resume` of the new operation, with this command's global options: what a
/// detached `start` runs.
fn resume_args(ctx: &Ctx, args: &StartArgs, op: &str) -> Vec<std::ffi::OsString> {
    let cli = &ctx.cli;
    let mut out: Vec<std::ffi::OsString> = vec![
        "--state-dir".into(),
        cli.state_dir.clone().into(),
        "--inventory".into(),
        cli.inventory.clone().into(),
        "--max-phases".into(),
        cli.max_phases.to_string().into(),
    ];
    if let Some(plans) = &cli.plans_dir {
        out.extend(["--plans-dir".into(), plans.clone().into()]);
    }
    out.extend([
        "plan".into(),
        "resume".into(),
        "--operation".into(),
        op.into(),
    ]);
    if let Some(reason) = &args.reason {
        out.extend(["--reason".into(), reason.into()]);
    }
    if args.yes {
        out.push("--yes".into());
    }
    out
}

/// The plan of `procedure` with `params`, over the inventory if one loads.
fn build_plan(
    ctx: &Ctx,
    procedure: &Procedure,
    params: &Params,
) -> Result<crate::action::Plan, CliError> {
    let templates = Templates::new();
    // A broken inventory is reported where the plan needs it; the plan is built without it.
    let inventory = ctx.inventory().ok().flatten();
    procedure
        .build_plan(
            params,
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
        })
}

/// A command-line argument as history records it: secret `--set` values redacted.
fn redact_arg(procedure: &Procedure, a: &str) -> String {
    match a.strip_prefix("--set=") {
        Some(rest) => format!("--set={}", redact_set(procedure, rest)),
        None if a.contains('=') => redact_set(procedure, a),
        None => a.to_string(),
    }
}

/// Refuses a plan whose targets are missing: no inventory or kubeconfig where the plan needs
/// one, or nodes and hosts the inventory does not have. Returns the inventory to run with.
fn check_targets(
    ctx: &Ctx,
    operation: &Operation,
    plan: &crate::action::Plan,
    params: &Params,
) -> Result<Option<Arc<Inventory>>, CliError> {
    let inventory = inventory_for(ctx, plan)?;
    if inventory.is_none() && needs_inventory(plan) {
        return Err(missing_inventory(ctx));
    }
    if uses_kube(plan) {
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
    Ok(inventory)
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
