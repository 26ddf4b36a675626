//! `medic plan approve` and `medic plan approvals`, and the approval gate `execute`,
//! `resume` and `rollback` pass before they take the lease. The rules are library code
//! (`crate::operation::approve`); this file parses and prints.

use serde_json::json;

use super::args::PlanArgs;
use super::{print_json, CliError, Ctx};
use crate::operation::approve::{self, ApproveError};
use crate::render::review_json;
use crate::store::{Actor, Operation, Store};

impl From<ApproveError> for CliError {
    fn from(e: ApproveError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

/// `plan approve` needs `--reason` (what the reviewer checked), before the state is touched.
pub(super) fn check_args(reason: Option<&str>) -> Result<(), CliError> {
    match reason {
        Some(r) if !r.trim().is_empty() => Ok(()),
        _ => Err(CliError::usage(
            "plan approve needs --reason TEXT (what you reviewed, e.g. the change ticket)",
        )),
    }
}

/// Refuses a run of an operation that lacks its approvals; with `--force`, records that it
/// ran unapproved and lets it go on.
pub(super) fn gate(
    store: &mut Store,
    op: &Operation,
    actor: &Actor,
    force: bool,
) -> Result<(), CliError> {
    let review = store.review(&op.id)?;
    let Err(refusal) = approve::check(&review, op) else {
        return Ok(());
    };
    if !force {
        return Err(refusal.into());
    }
    approve::record_unapproved(store, op, actor, &refusal)?;
    eprintln!(
        "{} running operation {} unapproved (--force, recorded in history)",
        console::style("forced:").yellow(),
        op.id
    );
    Ok(())
}

/// `medic plan approve --reason TEXT`.
pub(super) async fn approve(
    ctx: &Ctx,
    mut store: Store,
    op: &Operation,
    args: &PlanArgs,
) -> Result<i32, CliError> {
    let reason = args.reason.clone().unwrap_or_default();
    let actor = ctx.actor(|a| a.to_string());
    let approval = approve::approve(&mut store, op, &actor, &reason, None)?;
    let review = store.review(&op.id)?;
    store.release();
    let have = approve::counted(&review, op).len();
    let need = review.policy.count.max(1) as usize;
    if ctx.json() {
        print_json(&json!({
            "operation": op.id,
            "approval": approval,
            "counted": have,
            "needed": if review.policy.required { need } else { 0 },
        }));
        return Ok(0);
    }
    println!(
        "{} operation {} (plan sha256:{}) as {}",
        console::style("approved").green(),
        console::style(&op.id).bold(),
        &op.fingerprint[..16],
        approval.who()
    );
    if review.policy.required {
        println!("{have} of {need} approval(s) needed");
    }
    Ok(0)
}

/// `medic plan approvals`: the policy, each approval and whether it counts.
pub(super) fn approvals(ctx: &Ctx, store: &mut Store, op: &Operation) -> Result<i32, CliError> {
    let review = store.review(&op.id)?;
    store.release();
    let approved = approve::check(&review, op).is_ok();
    let counts = approve::counts(&review, op);
    let rows = review_json(&review, op, &counts)["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if ctx.json() {
        print_json(&json!({
            "operation": op.id,
            "fingerprint": op.fingerprint,
            "created_by": format!("{}@{}", op.created_by.user, op.created_by.host),
            "policy": review.policy,
            "approvals": rows,
            "approved": approved,
        }));
        return Ok(0);
    }
    let policy = &review.policy;
    if policy.required {
        println!(
            "policy: {} approval(s){} ({})",
            policy.count.max(1),
            if policy.distinct_from_creator {
                ", not by the creator"
            } else {
                ""
            },
            policy.from.join(", ")
        );
    } else {
        println!("policy: no approval required");
    }
    if rows.is_empty() {
        println!("no approvals");
    }
    for row in &rows {
        println!(
            "  {} {} plan sha256:{} {}{}",
            row["time"].as_str().unwrap_or_default(),
            row["who"].as_str().unwrap_or_default(),
            &row["fingerprint"].as_str().unwrap_or_default()[..16],
            row["reason"].as_str().unwrap_or_default(),
            if row["counts"] == true {
                ""
            } else {
                " (does not count)"
            }
        );
    }
    println!(
        "{}",
        if approved {
            console::style("may run").green()
        } else {
            console::style("needs approval").yellow()
        }
    );
    Ok(0)
}
