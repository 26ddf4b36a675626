//! Operations do not collide: a new operation may not act on a node (or the etcd membership)
//! that another *active* operation in the same state store acts on, unless `--force`.
//!
//! 1. [`collisions`] derives every active operation's targets from its stored plan
//!    ([`super::targets`]) and intersects them with the new operation's.
//! 2. `medic start` refuses with [`OperationError::Collides`] (exit 3), or with `--force`
//!    records the override in the new operation's history ([`forced_entry`]).
//!
//! The caller checks and creates under one hold of the store, so two starts cannot both pass.

use crate::inventory::Inventory;
use crate::store::{format_time, Actor, HistoryEntry, Operation, OperationState, Store};

use super::targets::{plan_targets, shown_values, Targets};
use super::OperationError;

/// An active operation that acts on some of the same things.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Collision {
    pub(crate) operation: String,
    pub(crate) procedure: String,
    pub(crate) created_at: u64,
    pub(crate) created_by: String,
    /// The nodes both act on.
    pub(crate) nodes: Vec<String>,
    /// Both change the etcd membership.
    pub(crate) etcd_membership: bool,
}

impl Collision {
    fn overlap(&self) -> Targets {
        Targets {
            nodes: self.nodes.iter().cloned().collect(),
            etcd_membership: self.etcd_membership,
        }
    }

    /// One line: which operation, its procedure, who started it when, and the overlap.
    pub(crate) fn describe(&self) -> String {
        format!(
            "operation {} (procedure {}, started by {} at {}) also acts on {}",
            self.operation,
            self.procedure,
            self.created_by,
            format_time(self.created_at),
            self.overlap().describe()
        )
    }
}

/// The active operations in `store` whose plans act on any of `targets`.
pub(crate) fn collisions(
    store: &mut Store,
    targets: &Targets,
    inventory: Option<&Inventory>,
) -> Result<Vec<Collision>, OperationError> {
    let ops = store.operations().map_err(OperationError::ListOperations)?;
    let mut found = Vec::new();
    for op in ops.iter().filter(|o| o.state == OperationState::Active) {
        let theirs = stored_targets(store, op, inventory)?;
        if let Some(shared) = targets.overlap(&theirs) {
            found.push(Collision {
                operation: op.id.clone(),
                procedure: op.procedure.clone(),
                created_at: op.created_at,
                created_by: format!("{}@{}", op.created_by.user, op.created_by.host),
                nodes: shared.nodes.into_iter().collect(),
                etcd_membership: shared.etcd_membership,
            });
        }
    }
    Ok(found)
}

/// What a stored operation acts on: its plan rendered with its parameters and captured
/// values (secret values never read: placeholders stand in for them).
fn stored_targets(
    store: &mut Store,
    op: &Operation,
    inventory: Option<&Inventory>,
) -> Result<Targets, OperationError> {
    let plan = store.plan(&op.id).map_err(OperationError::ReadState)?;
    let (params, vars) = shown_values(store, op)?;
    Ok(plan_targets(op, &plan, &params, &vars, inventory))
}

/// The history entry of a start that `--force` let through despite `collisions`.
pub(crate) fn forced_entry(
    collisions: &[Collision],
    actor: &Actor,
    reason: Option<String>,
) -> HistoryEntry {
    let lines: Vec<String> = collisions.iter().map(Collision::describe).collect();
    HistoryEntry {
        forced: true,
        detail: Some(format!("--force: started although {}", lines.join("; "))),
        ..HistoryEntry::new("forced", actor, reason)
    }
}

/// The refusal message: each colliding operation and what to do.
pub(crate) fn collides_message(collisions: &[Collision]) -> String {
    let mut out = String::from(
        "refused: another active operation acts on the same targets; two operations changing the same nodes or the etcd membership at once can break the cluster:",
    );
    for c in collisions {
        out.push_str(&format!("\n  {}", c.describe()));
    }
    let first = &collisions[0].operation;
    out.push_str(&format!(
        "\nlet it finish (`medic plan --operation {first}`), or close it (`medic plan complete --operation {first}`); or pass --force to start anyway (recorded in history)"
    ));
    out
}

/// Checks `new` against the active operations in `store`: refuses on a collision, or with
/// `force` adds the override to the history `create` writes. Returns the collisions let
/// through. Call it with the store held until `create`, so no other start slips in between.
pub(crate) fn admit(
    store: &mut Store,
    new: &mut super::NewOperation,
    plan: &crate::action::Plan,
    params: &crate::procedure::Params,
    inventory: Option<&Inventory>,
    force: bool,
) -> Result<Vec<Collision>, OperationError> {
    let targets = plan_targets(&new.operation, plan, params, &Default::default(), inventory);
    let found = collisions(store, &targets, inventory)?;
    if found.is_empty() {
        return Ok(found);
    }
    if !force {
        return Err(OperationError::Collides(found));
    }
    let op = &new.operation;
    new.more_history
        .push(forced_entry(&found, &op.created_by, op.reason.clone()));
    Ok(found)
}
