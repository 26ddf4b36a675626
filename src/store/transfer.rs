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
    let op = from.operation(id)?;
    let plan_json = serde_json::to_vec(&from.plan(id)?).expect("plan serializes");
    let fingerprint = sha256(&plan_json);
    if fingerprint != op.fingerprint {
        return Err(mismatch(
            id,
            "its plan does not match its fingerprint at the source",
        ));
    }
    let mut records: Vec<_> = from.records(id)?.into_iter().collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let history = from.history(id)?;
    let logs = all_logs(from, id)?;
    let vars = from.vars(id)?;
    let secrets = from.secrets(id)?;
    let review = from.review(id)?;
    for part in records.chunks(BATCH) {
        to.commit(
            id,
            Commit {
                records: part.to_vec(),
                ..Default::default()
            },
        )?;
    }
    for part in history.chunks(BATCH) {
        to.commit(
            id,
            Commit {
                history: part.to_vec(),
                ..Default::default()
            },
        )?;
    }
    for part in logs.chunks(4096) {
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
            vars: Some(vars.clone()),
            secrets: Some(secrets.clone()),
            ..Default::default()
        },
    )?;
    to.put_review(id, &review)?;
    to.commit(
        id,
        Commit {
            operation: Some(op.clone()),
            plan: Some(plan_json),
            ..Default::default()
        },
    )?;
    // Read back.
    let plan_back = serde_json::to_vec(&to.plan(id)?).expect("plan serializes");
    if sha256(&plan_back) != fingerprint || to.operation(id)? != op {
        return Err(mismatch(id, "the target's operation or plan differs"));
    }
    let mut records_back: Vec<_> = to.records(id)?.into_iter().collect();
    records_back.sort_by(|a, b| a.0.cmp(&b.0));
    if records_back != records {
        return Err(mismatch(id, "the target's phase records differ"));
    }
    if to.history(id)? != history {
        return Err(mismatch(
            id,
            "the target's history differs (count, order or contents)",
        ));
    }
    if all_logs(to, id)? != logs {
        return Err(mismatch(id, "the target's logs differ"));
    }
    let back: BTreeMap<String, String> = to.secrets(id)?;
    if to.vars(id)? != vars || back != secrets || to.review(id)? != review {
        return Err(mismatch(
            id,
            "the target's captured values, secrets or review differ",
        ));
    }
    Ok(Copied {
        records: records.len(),
        history: history.len(),
        log_lines: logs.len(),
        secrets: secrets.len(),
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
