//! Operations as library steps any front end can call: create one from a built plan, select
//! the one a command acts on, and complete one by hand. Nothing here prints.
//!
//! 1. [`draft`] describes the operation a plan becomes (what a dry run previews).
//! 2. [`create`] gives it a fresh ID and stores it with its plan, secrets and first history
//!    entry, in one commit.
//! 3. [`select`] finds an operation by ID or unique prefix, else the single active one.
//! 4. [`complete`] closes an active operation: completed if every leaf completed, else failed.
//! 5. [`summaries`] lists every operation with its progress.
//! 6. [`manual::set_phase`] records a phase's state by hand (`medic plan set`).
//! 7. [`targets`] and [`collide`]: what an operation acts on, and the active operations a new
//!    one would collide with; [`hints`]: what an interrupted phase may have done.

pub(crate) mod approve;
pub(crate) mod collide;
pub(crate) mod hints;
pub(crate) mod manual;
pub(crate) mod targets;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::engine::EngineError;
use crate::procedure::{Params, Procedure};
use crate::store::{
    format_time, now_ms, Actor, Commit, HistoryEntry, Operation, OperationState, Store, StoreError,
};

/// Why an operation step failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OperationError {
    /// Listing the stored operations (to pick a fresh ID or select one).
    #[error(transparent)]
    ListOperations(StoreError),
    /// Reading the operation's plan, records or lease.
    #[error(transparent)]
    ReadState(StoreError),
    /// Writing the operation (created or closed) and its history entry.
    #[error(transparent)]
    Commit(StoreError),
    #[error("--operation is empty (an unset shell variable?); give an operation ID, or leave --operation out to use the active one")]
    EmptyId,
    #[error("no operation `{wanted}`; run `medic operations` to list them")]
    NoSuchOperation { wanted: String },
    #[error("`{wanted}` matches several operations: {}; give more of the ID", .matches.join(", "))]
    AmbiguousId {
        wanted: String,
        matches: Vec<String>,
    },
    #[error("no active operation; start one with `medic start NAME` (see `medic procedures`)")]
    NoActiveOperation,
    #[error("{}", several_active_message(.active))]
    SeveralActive { active: Vec<Operation> },
    /// Completing while an executor holds the operation's lease (always
    /// [`EngineError::LeaseHeld`], whose wording it keeps).
    #[error(transparent)]
    LeaseHeld(EngineError),
    #[error("plan set --state {state}: a phase can be set to completed, failed or unstarted")]
    SetState { state: crate::plan::PhaseState },
    #[error(
        "plan set --phase={phase} needs --reason TEXT: history records why a phase was set by hand"
    )]
    SetWithoutReason { phase: crate::plan::PhaseId },
    #[error("operation {operation} is {state}; plan set changes only active operations")]
    SetClosed {
        operation: String,
        state: &'static str,
    },
    #[error(
        "no phase {phase} in operation {operation}{hint}; run `medic plan` to see the phase IDs"
    )]
    SetUnknownPhase {
        phase: crate::plan::PhaseId,
        operation: String,
        hint: String,
    },
    #[error("{phase} is a group (its state is derived from its phases); set its leaves one by one: {}", .leaves.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", "))]
    SetGroup {
        phase: crate::plan::PhaseId,
        leaves: Vec<crate::plan::PhaseId>,
    },
    #[error("internal error, please report it: {0}")]
    SetIllegal(crate::plan::IllegalTransition),
    /// Starting would act on what another active operation acts on (overridable with --force).
    #[error("{}", collide::collides_message(.0))]
    Collides(Vec<collide::Collision>),
}

impl OperationError {
    /// 2 for a selection the user can fix, 3 for a held lease, the store's own code otherwise.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            OperationError::ListOperations(e)
            | OperationError::ReadState(e)
            | OperationError::Commit(e) => e.exit_code(),
            OperationError::EmptyId
            | OperationError::NoSuchOperation { .. }
            | OperationError::AmbiguousId { .. }
            | OperationError::NoActiveOperation
            | OperationError::SeveralActive { .. } => 2,
            OperationError::LeaseHeld(e) => e.exit_code(),
            OperationError::SetState { .. }
            | OperationError::SetWithoutReason { .. }
            | OperationError::SetUnknownPhase { .. }
            | OperationError::SetGroup { .. } => 2,
            OperationError::SetClosed { .. } | OperationError::Collides(_) => 3,
            OperationError::SetIllegal(_) => 1,
        }
    }
}

fn several_active_message(active: &[Operation]) -> String {
    let mut msg = String::from("several operations are active; choose one with --operation:");
    for o in active {
        msg.push_str(&format!(
            "\n  {}  {}  created {}",
            o.id,
            o.procedure,
            format_time(o.created_at)
        ));
    }
    msg
}

/// An operation built but not stored yet: what a dry run previews and [`create`] stores.
pub(crate) struct NewOperation {
    /// The operation; its ID is empty until [`create`] assigns one.
    pub(crate) operation: Operation,
    plan_json: Vec<u8>,
    secrets: BTreeMap<String, String>,
    /// The parameters as history shows them (secret values as placeholders).
    shown_params: serde_json::Map<String, serde_json::Value>,
    /// Entries written with `operation_created` (a `--force` over a collision).
    pub(crate) more_history: Vec<HistoryEntry>,
}

/// The operation that running `procedure` with `params` as `plan` becomes, done by `actor`.
pub(crate) fn draft(
    procedure: &Procedure,
    params: &Params,
    plan: &crate::action::Plan,
    actor: Actor,
    reason: Option<String>,
) -> NewOperation {
    let plan_json = serde_json::to_vec(plan).expect("plan serializes");
    let operation = Operation {
        id: String::new(),
        procedure: procedure.name.clone(),
        description: procedure.description.clone(),
        params: params.values.clone(),
        secret_params: params.secrets.keys().cloned().collect(),
        created_at: now_ms(),
        created_by: actor,
        reason,
        state: OperationState::Active,
        finished_at: None,
        fingerprint: fingerprint(&plan_json),
    };
    NewOperation {
        operation,
        plan_json,
        secrets: params.secrets.clone(),
        shown_params: params.template_values(false).into_iter().collect(),
        more_history: Vec::new(),
    }
}

/// Stores `new` under a fresh ID with an `operation_created` history entry; returns it.
pub(crate) fn create(store: &mut Store, new: NewOperation) -> Result<Operation, OperationError> {
    let id = new_operation_id(store)?;
    let operation = Operation {
        id: id.clone(),
        ..new.operation
    };
    let entry = HistoryEntry {
        detail: Some(format!(
            "procedure {} with {}",
            operation.procedure,
            serde_json::Value::Object(new.shown_params)
        )),
        ..HistoryEntry::new(
            "operation_created",
            &operation.created_by,
            operation.reason.clone(),
        )
    };
    store
        .commit(
            &id,
            Commit {
                operation: Some(operation.clone()),
                plan: Some(new.plan_json),
                secrets: Some(new.secrets),
                history: std::iter::once(entry).chain(new.more_history).collect(),
                ..Default::default()
            },
        )
        .map_err(OperationError::Commit)?;
    Ok(operation)
}

/// `YYYYMMDD-HHMMSS-xxxx` (UTC), unused in `store`.
fn new_operation_id(store: &mut Store) -> Result<String, OperationError> {
    let existing: Vec<String> = store
        .operations()
        .map_err(OperationError::ListOperations)?
        .into_iter()
        .map(|o| o.id)
        .collect();
    // 2026-11-21T12:42:40Z → 20261121-124240
    let stamp = format_time(now_ms())
        .replace(['-', ':', 'Z'], "")
        .replace('T', "-");
    let date = &stamp[..15];
    let mut salt = (now_ms() as u32) ^ std::process::id().rotate_left(16);
    loop {
        let id = format!("{date}-{:04x}", salt & 0xffff);
        if !existing.contains(&id) {
            return Ok(id);
        }
        salt = salt.wrapping_mul(2654435761).wrapping_add(1);
    }
}

fn fingerprint(plan_json: &[u8]) -> String {
    let digest = Sha256::digest(plan_json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Picks the operation: explicit (ID or unique prefix), else the single active one; read-only
/// commands fall back to the newest operation when none is active.
pub(crate) fn select(
    store: &mut Store,
    wanted: Option<&str>,
    read_only: bool,
) -> Result<Operation, OperationError> {
    if wanted.is_some_and(|w| w.trim().is_empty()) {
        return Err(OperationError::EmptyId);
    }
    let ops = store.operations().map_err(OperationError::ListOperations)?;
    if let Some(w) = wanted {
        if let Some(op) = ops.iter().find(|o| o.id == w) {
            return Ok(op.clone());
        }
        let matches: Vec<&Operation> = ops.iter().filter(|o| o.id.starts_with(w)).collect();
        return match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(OperationError::NoSuchOperation {
                wanted: w.to_string(),
            }),
            many => Err(OperationError::AmbiguousId {
                wanted: w.to_string(),
                matches: many.iter().map(|o| o.id.clone()).collect(),
            }),
        };
    }
    let active: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.state == OperationState::Active)
        .collect();
    match active.as_slice() {
        [one] => Ok((*one).clone()),
        [] => match ops.last() {
            Some(last) if read_only => Ok(last.clone()),
            _ => Err(OperationError::NoActiveOperation),
        },
        many => Err(OperationError::SeveralActive {
            active: many.iter().map(|o| (*o).clone()).collect(),
        }),
    }
}

/// One operation with its progress, as `medic operations` lists it.
pub(crate) struct Summary {
    pub(crate) operation: Operation,
    /// Leaves completed, of `leaves`.
    pub(crate) completed: usize,
    pub(crate) leaves: usize,
    /// Whether a live executor holds its lease.
    pub(crate) executing: bool,
    /// Who executes it (`user@host`), while a live executor does.
    pub(crate) executor: Option<String>,
}

/// Every stored operation, oldest first, with its progress.
pub(crate) fn summaries(store: &mut Store) -> Result<Vec<Summary>, OperationError> {
    let ops = store.operations().map_err(OperationError::ListOperations)?;
    let mut rows = Vec::new();
    for op in ops {
        let plan = store.plan(&op.id).map_err(OperationError::ReadState)?;
        let records = store.records(&op.id).map_err(OperationError::ReadState)?;
        let leaves = plan.leaves().count();
        let completed = plan
            .leaves()
            .filter(|l| {
                records
                    .get(&plan.node(*l).id)
                    .is_some_and(|r| r.state == crate::plan::PhaseState::Completed)
            })
            .count();
        let lease = store.lease(&op.id).map_err(OperationError::ReadState)?;
        let executing = lease.as_ref().is_some_and(|l| l.is_alive());
        rows.push(Summary {
            operation: op,
            completed,
            leaves,
            executing,
            executor: lease
                .filter(|l| executing && l.is_alive())
                .map(|l| format!("{}@{}", l.user, l.host)),
        });
    }
    Ok(rows)
}

/// What [`complete`] did.
pub(crate) enum Completion {
    /// The operation was closed already; nothing changed.
    AlreadyClosed(Operation),
    /// Closed now: completed, or failed with the leaves not completed (`ID (state)` each).
    Closed {
        operation: Operation,
        unfinished: Vec<String>,
    },
}

/// Closes `op` by hand for `actor`: completed if every leaf completed, else failed. Refused
/// while an executor holds its lease.
pub(crate) fn complete(
    store: &mut Store,
    mut op: Operation,
    actor: &Actor,
    reason: Option<String>,
) -> Result<Completion, OperationError> {
    if op.state != OperationState::Active {
        return Ok(Completion::AlreadyClosed(op));
    }
    let lease = store.lease(&op.id).map_err(OperationError::ReadState)?;
    if let Some(lease) = lease.filter(|l| l.is_alive()) {
        return Err(OperationError::LeaseHeld(EngineError::LeaseHeld {
            operation: op.id.clone(),
            lease: Box::new(lease),
        }));
    }
    let plan = store.plan(&op.id).map_err(OperationError::ReadState)?;
    let records = store.records(&op.id).map_err(OperationError::ReadState)?;
    let states = plan.states(&records);
    let unfinished: Vec<String> = plan
        .leaves()
        .filter(|l| states[*l] != crate::plan::PhaseState::Completed)
        .map(|l| format!("{} ({})", plan.node(l).id, states[l]))
        .collect();
    op.state = if unfinished.is_empty() {
        OperationState::Completed
    } else {
        OperationState::Failed
    };
    op.finished_at = Some(now_ms());
    let entry = HistoryEntry {
        detail: (!unfinished.is_empty())
            .then(|| format!("not completed: {}", unfinished.join(", "))),
        ..HistoryEntry::new(format!("operation_{}", op.state.as_str()), actor, reason)
    };
    store
        .commit(
            &op.id,
            Commit {
                operation: Some(op.clone()),
                history: vec![entry],
                ..Default::default()
            },
        )
        .map_err(OperationError::Commit)?;
    Ok(Completion::Closed {
        operation: op,
        unfinished,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str, created_at: u64, state: OperationState) -> Operation {
        Operation {
            id: id.into(),
            procedure: "p".into(),
            description: String::new(),
            params: BTreeMap::new(),
            secret_params: Vec::new(),
            created_at,
            created_by: Actor {
                user: "u".into(),
                host: "h".into(),
                pid: 1,
                command: "medic start p".into(),
            },
            reason: None,
            state,
            finished_at: None,
            fingerprint: String::new(),
        }
    }

    fn store_with(ops: &[Operation]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_with(dir.path(), crate::store::Access::Create).unwrap();
        for o in ops {
            let commit = Commit {
                operation: Some(o.clone()),
                ..Default::default()
            };
            store.commit(&o.id, commit).unwrap();
        }
        (dir, store)
    }

    /// The selected ID, or the error's variant and message.
    fn selected(ops: &[Operation], wanted: Option<&str>, read_only: bool) -> String {
        let (_dir, mut store) = store_with(ops);
        match select(&mut store, wanted, read_only) {
            Ok(o) => o.id,
            Err(e) => format!("error {}: {e}", e.exit_code()),
        }
    }

    #[test]
    fn select_by_id_prefix_or_the_single_active_operation() {
        use OperationState::{Active, Completed};
        let one_active = [
            op("20260101-000000-aaaa", 1, Completed),
            op("20260102-000000-bbbb", 2, Active),
        ];
        let none_active = [
            op("20260101-000000-aaaa", 1, Completed),
            op("20260102-000000-bbbb", 2, Completed),
        ];
        let two_active = [
            op("20260101-000000-aaaa", 1, Active),
            op("20260102-000000-bbbb", 2, Active),
        ];
        let cases: &[(&[Operation], Option<&str>, bool, &str)] = &[
            (&one_active, Some("20260101-000000-aaaa"), false, "20260101-000000-aaaa"),
            (&one_active, Some("20260102"), false, "20260102-000000-bbbb"),
            (&one_active, None, false, "20260102-000000-bbbb"),
            (&none_active, None, true, "20260102-000000-bbbb"),
            (
                &one_active,
                Some("2026"),
                false,
                "error 2: `2026` matches several operations: 20260101-000000-aaaa, 20260102-000000-bbbb; give more of the ID",
            ),
            (
                &one_active,
                Some("nope"),
                true,
                "error 2: no operation `nope`; run `medic operations` to list them",
            ),
            (
                &one_active,
                Some(" "),
                true,
                "error 2: --operation is empty (an unset shell variable?); give an operation ID, or leave --operation out to use the active one",
            ),
            (
                &none_active,
                None,
                false,
                "error 2: no active operation; start one with `medic start NAME` (see `medic procedures`)",
            ),
        ];
        for (ops, wanted, read_only, expected) in cases {
            assert_eq!(
                selected(ops, *wanted, *read_only),
                *expected,
                "select({wanted:?}, read_only={read_only})"
            );
        }
        let several = selected(&two_active, None, true);
        assert!(
            several.starts_with(
                "error 2: several operations are active; choose one with --operation:\n  20260101-000000-aaaa  p  created "
            ),
            "{several}"
        );
    }

    #[test]
    fn completing_a_closed_operation_changes_nothing() {
        let closed = op("20260101-000000-aaaa", 1, OperationState::Completed);
        let (_dir, mut store) = store_with(std::slice::from_ref(&closed));
        let actor = closed.created_by.clone();
        match complete(&mut store, closed.clone(), &actor, None).unwrap() {
            Completion::AlreadyClosed(o) => assert_eq!(o, closed),
            Completion::Closed { .. } => panic!("a closed operation was closed again"),
        }
        assert!(store.history(&closed.id).unwrap().is_empty());
    }
}
