//! `medic plan set --phase ID --state completed|failed|unstarted --reason TEXT`: parse, call
//! `crate::operation::manual::set_phase`, and say what changed and what follows from it; and
//! what `medic start --force` says when it starts over a collision.

use serde_json::json;

use super::args::{PlanArgs, SetArgs, SetState};
use super::{print_json, CliError, Ctx};
use crate::operation::collide::Collision;
use crate::operation::manual::set_phase;
use crate::plan::{PhaseId, PhaseState};
use crate::store::{Operation, Store};

/// A `--phase` value: exactly one phase ID, as every `--phase` takes it.
fn phase_arg(text: &str) -> Result<PhaseId, CliError> {
    PhaseId::parse_input(text).map_err(|e| CliError::usage(format!("--phase: {e}")))
}

/// Refuses a malformed `--phase` or a missing reason before the state is touched.
pub(super) fn check_args(args: &SetArgs, reason: Option<&str>) -> Result<(), CliError> {
    let phase = phase_arg(&args.phase)?;
    if reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(CliError::usage(format!(
            "plan set --phase={phase} needs --reason TEXT: history records why a phase was set by hand"
        )));
    }
    Ok(())
}

pub(super) fn plan_set(
    ctx: &Ctx,
    store: &mut Store,
    op: &Operation,
    args: &SetArgs,
    plan_args: &PlanArgs,
) -> Result<i32, CliError> {
    let phase = phase_arg(&args.phase)?;
    let to = match args.state {
        SetState::Completed => PhaseState::Completed,
        SetState::Failed => PhaseState::Failed,
        SetState::Unstarted => PhaseState::Unstarted,
    };
    let actor = ctx.actor(|a| a.to_string());
    let reason = plan_args.reason.as_deref().unwrap_or_default();
    let change = set_phase(store, op, &phase, to, &actor, reason);
    store.release();
    let change = change?;
    if ctx.json() {
        print_json(&json!({ "change": change }));
        return Ok(0);
    }
    if !change.changed {
        println!("{phase} is already {to}; nothing changed");
        return Ok(0);
    }
    println!(
        "{} {phase} set to {to} by hand (was {}); recorded in history",
        console::style("✔").green(),
        change.from
    );
    match to {
        PhaseState::Completed => {
            println!("phases that require it may run now; `medic plan resume` runs what remains")
        }
        PhaseState::Unstarted => println!("`medic plan resume` runs it again"),
        _ => println!(
            "phases that require it wait; `medic plan execute --phase={phase}` runs it again"
        ),
    }
    if !change.missing_captures.is_empty() {
        println!(
            "{} it captures {} at run time, which no run has stored: later phases that use {} cannot render until it runs",
            console::style("⚠").yellow(),
            change.missing_captures.join(", "),
            if change.missing_captures.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(0)
}

/// `medic start --force` over colliding operations: says which (stderr, so `-o json` stays
/// one document); the override is in the new operation's history.
pub(super) fn say_forced(forced: &[Collision]) {
    for c in forced {
        eprintln!(
            "{} --force: starting although {} (recorded in history)",
            console::style("⚠").yellow(),
            c.describe()
        );
    }
}
