//! The operation's lease: one executor at a time, taken over from a dead one; and which
//! phases show as interrupted when no live executor holds it.

use std::collections::{BTreeSet, HashMap};

use crate::action::Plan;
use crate::plan::{PhaseId, PhaseRecord};
use crate::store::{
    now_ms, process_start_ticks, Actor, Commit, HistoryEntry, Lease, Operation, Store,
};

use super::EngineError;

/// Takes the operation's lease for this process, or reports the live holder.
pub(crate) fn acquire_lease(
    store: &mut Store,
    op: &Operation,
    actor: &Actor,
    reason: Option<String>,
) -> Result<Lease, EngineError> {
    let previous = store.lease(&op.id)?;
    let mut detail = None;
    if let Some(lease) = previous {
        if lease.is_alive() && lease.pid != std::process::id() {
            return Err(EngineError::LeaseHeld {
                operation: op.id.clone(),
                lease: Box::new(lease),
            });
        }
        detail = Some(format!(
            "took over from a dead executor: {}",
            lease.describe()
        ));
    }
    let now = now_ms();
    let lease = Lease {
        pid: std::process::id(),
        host: actor.host.clone(),
        user: actor.user.clone(),
        started_at: now,
        heartbeat_at: now,
        proc_start: process_start_ticks(std::process::id()),
        command: actor.command.clone(),
        store_alive: None,
    };
    let entry = HistoryEntry {
        time: now,
        detail,
        ..HistoryEntry::new("lease_acquired", actor, reason)
    };
    store.commit(
        &op.id,
        Commit {
            lease: Some(Some(lease.clone())),
            history: vec![entry],
            ..Default::default()
        },
    )?;
    Ok(lease)
}

/// Leaves whose executor is gone: in progress while nobody holds a live lease.
pub(crate) fn interrupted_phases(
    plan: &Plan,
    records: &HashMap<PhaseId, PhaseRecord>,
    lease: Option<&Lease>,
) -> BTreeSet<PhaseId> {
    if lease.is_some_and(|l| l.is_alive()) {
        return BTreeSet::new();
    }
    let states = plan.states(records);
    plan.in_progress_leaves(&states, 0)
        .map(|l| plan.node(l).id.clone())
        .collect()
}
