//! Approvals: who must approve an operation before it executes, `medic plan approve`, and
//! the check `execute`/`resume`/`rollback` make (the gate). Stored with the operation's review
//! (`crate::store::Review`), each approval bound to the plan fingerprint it approved.
//!
//! 1. `start` fixes the policy ([`policy_for`]: the procedure's `approval:` and the
//!    inventory's `policy: {require_approval: true}`) and records it ([`record_start`]).
//! 2. `plan approve` adds an [`Approval`] (user@host, time, fingerprint, reason; replacing the
//!    same person's earlier one) and a history entry, and records the facts read now; the
//!    creator's own approval is refused when the policy says distinct.
//! 3. Before a run, [`check`] counts the approvals that hold (this fingerprint, distinct
//!    people, not the creator when distinct) and refuses with who must approve and how;
//!    `--force` runs anyway and [`record_unapproved`] writes that into history.

use crate::inventory::Inventory;
use crate::procedure::{ApprovalSpec, Procedure};
use crate::store::{
    now_ms, Actor, Approval, ApprovalPolicy, Commit, Facts, HistoryEntry, Operation, Review, Store,
    StoreError,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApproveError {
    #[error("failed to read or write the review of operation {operation}: {source}")]
    Review {
        operation: String,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    Unapproved(String),
    #[error("{who} created operation {operation} and its approval must come from someone else (`distinct_from_creator`); ask another person to run `medic plan approve --operation {operation} --reason TEXT`")]
    OwnApproval { who: String, operation: String },
    #[error("operation {operation} is {state}; there is nothing left to approve")]
    Closed { operation: String, state: String },
}

impl ApproveError {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            ApproveError::Review { source, .. } => source.exit_code(),
            _ => 3,
        }
    }
}

fn review_error(op: &Operation) -> impl FnOnce(StoreError) -> ApproveError + '_ {
    move |source| ApproveError::Review {
        operation: op.id.clone(),
        source,
    }
}

/// The policy of a new operation: its procedure's `approval:` merged with that of every
/// procedure it includes (at any depth; the strictest wins: required if any requires it, the
/// highest count, distinct if any says so), made stricter by the inventory's
/// `policy: {require_approval: true}` (at least one approval).
pub(crate) fn policy_for(procedure: &Procedure, inventory: Option<&Inventory>) -> ApprovalPolicy {
    let mut policy = ApprovalPolicy::default();
    if let Some(spec) = procedure.approval.filter(|a| a.required) {
        tighten(&mut policy, spec, format!("procedure {}", procedure.name));
    }
    crate::procedure::walk(&procedure.phases, &mut |phase| {
        if let Some(inc) = &phase.include {
            if let Some(spec) = inc.approval.filter(|a| a.required) {
                let from = format!("included procedure {}", inc.procedure);
                tighten(&mut policy, spec, from);
            }
        }
    });
    if inventory.is_some_and(|i| i.require_approval) {
        policy.required = true;
        policy.count = policy.count.max(1);
        policy.from.push("inventory policy".into());
    }
    policy
}

/// Makes `policy` at least as strict as `spec` (which `from` asks for).
fn tighten(policy: &mut ApprovalPolicy, spec: ApprovalSpec, from: String) {
    policy.required = true;
    policy.count = policy.count.max(spec.count);
    policy.distinct_from_creator |= spec.distinct_from_creator;
    if !policy.from.contains(&from) {
        policy.from.push(from);
    }
}

/// Records what `start` fixed: the policy and the facts its dry-run showed.
pub(crate) fn record_start(
    store: &mut Store,
    op: &Operation,
    policy: ApprovalPolicy,
    facts: Option<Facts>,
) -> Result<(), ApproveError> {
    let review = Review {
        policy,
        approvals: Vec::new(),
        facts,
        paused: None,
    };
    store.put_review(&op.id, &review).map_err(review_error(op))
}

fn is_creator(op: &Operation, user: &str, host: &str) -> bool {
    op.created_by.user == user && op.created_by.host == host
}

/// `medic plan approve`: records `actor`'s approval of the operation's plan, and the facts
/// read now (they replace those of `start`: the approval covers the cluster as it is now).
pub(crate) fn approve(
    store: &mut Store,
    op: &Operation,
    actor: &Actor,
    reason: &str,
    facts: Option<Facts>,
) -> Result<Approval, ApproveError> {
    if op.state != crate::store::OperationState::Active {
        return Err(ApproveError::Closed {
            operation: op.id.clone(),
            state: op.state.as_str().to_string(),
        });
    }
    let mut review = store.review(&op.id).map_err(review_error(op))?;
    let who = format!("{}@{}", actor.user, actor.host);
    if review.policy.distinct_from_creator && is_creator(op, &actor.user, &actor.host) {
        return Err(ApproveError::OwnApproval {
            who,
            operation: op.id.clone(),
        });
    }
    // Approving again (after drift, say) replaces one's earlier approval of this plan.
    review
        .approvals
        .retain(|a| !(a.who() == who && a.fingerprint == op.fingerprint));
    let approval = Approval {
        user: actor.user.clone(),
        host: actor.host.clone(),
        at: now_ms(),
        fingerprint: op.fingerprint.clone(),
        reason: reason.to_string(),
    };
    review.approvals.push(approval.clone());
    if facts.is_some() {
        review.facts = facts;
    }
    store
        .put_review(&op.id, &review)
        .map_err(review_error(op))?;
    let entry = HistoryEntry {
        detail: Some(format!(
            "approved plan sha256:{} ({} of {} needed)",
            &op.fingerprint[..16],
            counted(&review, op).len(),
            review.policy.count.max(1)
        )),
        ..HistoryEntry::new("approved", actor, Some(reason.to_string()))
    };
    store
        .commit(
            &op.id,
            Commit {
                history: vec![entry],
                ..Default::default()
            },
        )
        .map_err(review_error(op))?;
    Ok(approval)
}

/// The approvals that count: for this plan's fingerprint, one per person, not the creator's
/// when the policy says distinct.
pub(crate) fn counted<'r>(review: &'r Review, op: &Operation) -> Vec<&'r Approval> {
    let mut seen = std::collections::BTreeSet::new();
    review
        .approvals
        .iter()
        .filter(|a| a.fingerprint == op.fingerprint)
        .filter(|a| !(review.policy.distinct_from_creator && is_creator(op, &a.user, &a.host)))
        .filter(|a| seen.insert(a.who()))
        .collect()
}

/// For each approval of the review, in order, whether it counts.
pub(crate) fn counts(review: &Review, op: &Operation) -> Vec<bool> {
    let counted = counted(review, op);
    review
        .approvals
        .iter()
        .map(|a| counted.iter().any(|c| std::ptr::eq(*c, a)))
        .collect()
}

/// Whether the operation may run as far as approvals go; the refusal says who must approve
/// and how.
pub(crate) fn check(review: &Review, op: &Operation) -> Result<(), ApproveError> {
    let policy = &review.policy;
    if !policy.required {
        return Ok(());
    }
    let have = counted(review, op).len() as u32;
    let need = policy.count.max(1);
    if have >= need {
        return Ok(());
    }
    let creator = format!("{}@{}", op.created_by.user, op.created_by.host);
    let by = if policy.distinct_from_creator {
        format!("someone other than {creator} (who created it)")
    } else {
        "anyone".to_string()
    };
    Err(ApproveError::Unapproved(format!(
        "operation {op_id} needs {need} approval{s} ({from}) and has {have}; {by} must review it (`medic plan --operation {op_id} export`, or a dry-run) and run `medic plan approve --operation {op_id} --reason TEXT`; or pass --force to run it unapproved (recorded in history)",
        op_id = op.id,
        s = if need == 1 { "" } else { "s" },
        from = policy.from.join(", "),
    )))
}

/// Records in history that a run went ahead unapproved with `--force`.
pub(crate) fn record_unapproved(
    store: &mut Store,
    op: &Operation,
    actor: &Actor,
    refusal: &ApproveError,
) -> Result<(), ApproveError> {
    let entry = HistoryEntry {
        forced: true,
        detail: Some(format!("--force: ran unapproved: {refusal}")),
        ..HistoryEntry::new("unapproved", actor, None)
    };
    store
        .commit(
            &op.id,
            Commit {
                history: vec![entry],
                ..Default::default()
            },
        )
        .map_err(review_error(op))
}
