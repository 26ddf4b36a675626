//! `medic plan approve` and `medic plan approvals`, and the approval gate `execute`,
//! `resume` and `rollback` pass before they take the lease. The rules are library code
//! (`crate::operation::approve`); this file parses and prints.

use serde_json::json;

use super::args::PlanArgs;
use super::{print_json, CliError, Ctx};
use crate::engine::{differences, read_facts, FactsOf};
use crate::operation::approve::{self, ApproveError};
use crate::procedure::Params;
use crate::render::{policy_sentence, review_json};
use crate::ssh::SshPool;
use crate::store::{format_time, Actor, Facts, Operation, Store};

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
    let facts = current_facts(ctx, &mut store, op, "approve").await?;
    let approval = approve::approve(&mut store, op, &actor, &reason, Some(facts))?;
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
    println!("policy: {}", policy_sentence(&review.policy));
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

/// The facts of the operation's plan as they are now (the database released meanwhile).
async fn current_facts(
    ctx: &Ctx,
    store: &mut Store,
    op: &Operation,
    at: &str,
) -> Result<Facts, CliError> {
    let plan = store.plan(&op.id)?;
    let params = Params {
        values: op.params.clone(),
        secrets: store.secrets(&op.id)?,
    };
    let vars = store.vars(&op.id)?;
    store.release();
    let inventory = super::inventory_for(ctx, &plan)?;
    let ssh = SshPool::new();
    let of = FactsOf {
        op,
        params: &params,
        vars: &vars,
    };
    let facts = read_facts(inventory.as_deref(), &plan, &of, &ssh, at).await;
    ssh.close_all().await;
    Ok(facts)
}

/// `medic plan drift`: every fact recorded at start or approve against the cluster now;
/// exit 0 when nothing changed, 1 when something did.
pub(super) async fn drift(ctx: &Ctx, mut store: Store, op: &Operation) -> Result<i32, CliError> {
    let recorded = store.review(&op.id)?.facts;
    let Some(recorded) = recorded else {
        store.release();
        if ctx.json() {
            print_json(&json!({"operation": op.id, "recorded": null, "differences": []}));
        } else {
            println!("no facts were recorded for operation {}", op.id);
        }
        return Ok(0);
    };
    let now = current_facts(ctx, &mut store, op, "now").await?;
    let diff = differences(&recorded, &now);
    if ctx.json() {
        print_json(&json!({
            "operation": op.id,
            "recorded": recorded,
            "now": now,
            "differences": diff,
        }));
        return Ok(i32::from(!diff.is_empty()));
    }
    println!(
        "facts recorded at {} ({}) against now:",
        recorded.at,
        format_time(recorded.taken_at)
    );
    let keys: std::collections::BTreeSet<&String> =
        recorded.items.keys().chain(now.items.keys()).collect();
    for key in keys {
        let was = recorded.items.get(key).map_or("-", |s| s.as_str());
        let is = now.items.get(key).map_or("-", |s| s.as_str());
        if was == is {
            println!("  {key}: {was}");
        } else {
            println!("{} {key}: {was} → {is}", console::style("!").red().bold());
        }
    }
    if diff.is_empty() {
        println!("{}", console::style("no drift").green());
    } else {
        println!(
            "{}",
            console::style(format!("{} difference(s):", diff.len())).red()
        );
        for d in &diff {
            println!("  {d}");
        }
        println!(
            "if the plan is still right, approve it again: `medic plan approve --operation {} --reason TEXT`",
            op.id
        );
    }
    Ok(i32::from(!diff.is_empty()))
}
