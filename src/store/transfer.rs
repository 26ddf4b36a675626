//! Copying one operation from one store to another (sled ↔ etcd, `medic state migrate`):
//! everything it holds, then a check that the target reads back the same.
//!
//! 1. Refuse if the operation exists at the target (nothing is overwritten).
//! 2. Check the plan against the operation's fingerprint (sha256 of the plan's JSON).
//! 3. Write records, history (in order, so the sequence numbers stay the same), logs,
//!    captured values and secrets (re-encrypted by the target, if it encrypts) in batches,
//!    then the review, and last the operation with its plan: until that final commit the
//!    operation is invisible at the target, so a copy cut short lists nothing half-made.
//! 4. Read everything back from the target and compare counts and contents.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{Commit, LogLine, Store, StoreError};

/// What one copy moved (and verified).
pub(crate) struct Copied {
    pub(crate) records: usize,
    pub(crate) history: usize,
    pub(crate) log_lines: usize,
    pub(crate) secrets: usize,
    pub(crate) fingerprint: String,
}

const BATCH: usize = 64;

/// Everything a store holds for one operation, as read from it.
#[derive(PartialEq)]
struct Snapshot {
    operation: super::Operation,
    plan_json: Vec<u8>,
    records: Vec<(crate::plan::PhaseId, crate::plan::PhaseRecord)>,
    history: Vec<super::HistoryEntry>,
    logs: Vec<LogLine>,
    vars: serde_json::Map<String, serde_json::Value>,
    secrets: BTreeMap<String, String>,
    review: super::Review,
}

impl Snapshot {
    fn read(store: &mut Store, id: &str) -> Result<Snapshot, StoreError> {
        let mut records: Vec<_> = store.records(id)?.into_iter().collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Snapshot {
            operation: store.operation(id)?,
            plan_json: serde_json::to_vec(&store.plan(id)?).expect("plan serializes"),
            records,
            history: store.history(id)?,
            logs: all_logs(store, id)?,
            vars: store.vars(id)?,
            secrets: store.secrets(id)?,
            review: store.review(id)?,
        })
    }

    /// Writes it to `to` (see the module comment: the operation and its plan last).
    fn write(&self, to: &mut Store, id: &str) -> Result<(), StoreError> {
        for part in self.records.chunks(BATCH) {
            to.commit(
                id,
                Commit {
                    records: part.to_vec(),
                    ..Default::default()
                },
            )?;
        }
        for part in self.history.chunks(BATCH) {
            to.commit(
                id,
                Commit {
                    history: part.to_vec(),
                    ..Default::default()
                },
            )?;
        }
        for part in self.logs.chunks(4096) {
            to.commit(
                id,
                Commit {
                    logs: part.to_vec(),
                    ..Default::default()
                },
            )?;
        }
        to.commit(
            id,
            Commit {
                vars: Some(self.vars.clone()),
                secrets: Some(self.secrets.clone()),
                ..Default::default()
            },
        )?;
        to.put_review(id, &self.review)?;
        to.commit(
            id,
            Commit {
                operation: Some(self.operation.clone()),
                plan: Some(self.plan_json.clone()),
                ..Default::default()
            },
        )
    }

    /// What differs between `self` and `other`, named; `None` if they are the same.
    fn difference(&self, other: &Snapshot) -> Option<&'static str> {
        if self.operation != other.operation || self.plan_json != other.plan_json {
            Some("the target's operation or plan differs")
        } else if self.records != other.records {
            Some("the target's phase records differ")
        } else if self.history != other.history {
            Some("the target's history differs (count, order or contents)")
        } else if self.logs != other.logs {
            Some("the target's logs differ")
        } else if self != other {
            Some("the target's captured values, secrets or review differ")
        } else {
            None
        }
    }
}

/// Copies operation `id` from `from` to `to` (see the module comment).
pub(crate) fn migrate_operation(
    from: &mut Store,
    to: &mut Store,
    id: &str,
) -> Result<Copied, StoreError> {
    match to.operation(id) {
        Err(StoreError::NoOperation(_)) => {}
        Ok(_) => {
            return Err(super::etcd::EtcdStoreError::OperationExists {
                operation: id.to_string(),
            }
            .into())
        }
        Err(e) => return Err(e),
    }
    let source = Snapshot::read(from, id)?;
    let fingerprint = sha256(&source.plan_json);
    if fingerprint != source.operation.fingerprint {
        return Err(mismatch(
            id,
            "its plan does not match its fingerprint at the source",
        ));
    }
    source.write(to, id)?;
    if let Some(what) = source.difference(&Snapshot::read(to, id)?) {
        return Err(mismatch(id, what));
    }
    Ok(Copied {
        records: source.records.len(),
        history: source.history.len(),
        log_lines: source.logs.len(),
        secrets: source.secrets.len(),
        fingerprint,
    })
}

fn all_logs(store: &mut Store, id: &str) -> Result<Vec<LogLine>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (lines, next) = store.logs_after(id, after.as_deref(), 4096)?;
        out.extend(lines);
        match next {
            Some(k) => after = Some(k),
            None => return Ok(out),
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mismatch(id: &str, what: &str) -> StoreError {
    super::etcd::EtcdStoreError::Verify {
        operation: id.to_string(),
        detail: what.to_string(),
    }
    .into()
}
