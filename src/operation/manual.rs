//! `medic plan set`: the operator records by hand the state of one leaf phase (a step done by
//! hand, or one that must run again), as Gravity's `plan set` does.
//!
//! 1. Refuse without a reason, for a group (naming its leaves), for a closed operation, and
//!    while an executor holds the lease (checked and written under one hold of the store, so
//!    no executor can start in between).
//! 2. Change the record through the one transition function (`Transition::Set*`).
//! 3. Write the record and a `manual_set` history entry (previous state, reason) as one commit.
//!
//! Parent states are derived from the leaves, and the requirement checks read the same
//! records, so both follow the change without anything else to do.

use crate::engine::{interrupted_phases, EngineError};
use crate::plan::{PhaseId, PhaseState, Transition};
use crate::store::{now_ms, Actor, Commit, HistoryEntry, Operation, OperationState, Store};

use super::OperationError;

/// What [`set_phase`] did.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ManualChange {
    pub(crate) operation: String,
    pub(crate) phase: PhaseId,
    /// The state before, as the plan showed it (`interrupted` for an in-progress leaf whose
    /// executor is gone).
    pub(crate) from: String,
    pub(crate) to: PhaseState,
    /// False when the phase was in that state already (nothing written).
    pub(crate) changed: bool,
    /// Values the phase captures that no run has stored: later phases using them cannot
    /// render until it runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) missing_captures: Vec<String>,
}

/// Records by hand that leaf `phase` of `op` is `to` (completed, failed or unstarted), for
/// `reason`, done by `actor`.
pub(crate) fn set_phase(
    store: &mut Store,
    op: &Operation,
    phase: &PhaseId,
    to: PhaseState,
    actor: &Actor,
    reason: &str,
) -> Result<ManualChange, OperationError> {
    let t = match to {
        PhaseState::Completed => Transition::SetCompleted,
        PhaseState::Failed => Transition::SetFailed,
        PhaseState::Unstarted => Transition::SetUnstarted,
        other => return Err(OperationError::SetState { state: other }),
    };
    if reason.trim().is_empty() {
        return Err(OperationError::SetWithoutReason {
            phase: phase.clone(),
        });
    }
    if op.state != OperationState::Active {
        return Err(OperationError::SetClosed {
            operation: op.id.clone(),
            state: op.state.as_str(),
        });
    }
    let plan = store.plan(&op.id).map_err(OperationError::ReadState)?;
    let i = leaf_index(&plan, op, phase)?;
    let lease = store.lease(&op.id).map_err(OperationError::ReadState)?;
    if let Some(lease) = lease.clone().filter(|l| l.is_alive()) {
        return Err(OperationError::LeaseHeld(EngineError::LeaseHeld {
            operation: op.id.clone(),
            lease: Box::new(lease),
        }));
    }
    let records = store.records(&op.id).map_err(OperationError::ReadState)?;
    let current = records.get(phase).cloned().unwrap_or_default();
    let interrupted = interrupted_phases(&plan, &records, lease.as_ref()).contains(phase);
    let from = if interrupted {
        "interrupted".to_string()
    } else {
        current.state.to_string()
    };
    let vars = store.vars(&op.id).map_err(OperationError::ReadState)?;
    let secrets = store.secrets(&op.id).map_err(OperationError::ReadState)?;
    let missing_captures = if to == PhaseState::Completed {
        plan.node(i)
            .capture
            .keys()
            .filter(|k| !vars.contains_key(*k) && !secrets.contains_key(*k))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let mut change = ManualChange {
        operation: op.id.clone(),
        phase: phase.clone(),
        from,
        to,
        changed: false,
        missing_captures,
    };
    if current.state == to {
        return Ok(change);
    }
    let next = current
        .apply(t, now_ms())
        .map_err(OperationError::SetIllegal)?;
    let entry = HistoryEntry {
        phase: Some(phase.clone()),
        from: Some(current.state),
        to: Some(to),
        detail: Some(format!(
            "set by hand (medic plan set): was {}, now {to}",
            change.from
        )),
        ..HistoryEntry::new("manual_set", actor, Some(reason.to_string()))
    };
    store
        .commit(
            &op.id,
            Commit {
                records: vec![(phase.clone(), next)],
                history: vec![entry],
                ..Default::default()
            },
        )
        .map_err(OperationError::Commit)?;
    change.changed = true;
    Ok(change)
}

/// The index of leaf `phase` in `plan`; an unknown phase (with the closest ID) or a group
/// (with its leaves) is an input error.
fn leaf_index(
    plan: &crate::action::Plan,
    op: &Operation,
    phase: &PhaseId,
) -> Result<usize, OperationError> {
    let Some(i) = plan.find(phase) else {
        let hint =
            crate::source::closest(phase.as_str(), plan.nodes().iter().map(|n| n.id.as_str()))
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
        return Err(OperationError::SetUnknownPhase {
            phase: phase.clone(),
            operation: op.id.clone(),
            hint,
        });
    };
    if !plan.node(i).is_leaf() {
        let leaves = plan
            .subtree(i)
            .filter(|d| plan.node(*d).is_leaf())
            .map(|d| plan.node(d).id.clone())
            .collect();
        return Err(OperationError::SetGroup {
            phase: phase.clone(),
            leaves,
        });
    }
    Ok(i)
}
