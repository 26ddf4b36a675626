//! Migration of a version-1 database to the current format, when it is first opened.
//!
//! Version 1 stored each plan under `plan/OP` among the keys that change, each phase record and
//! history entry as full JSON, and the actor's user, host, pid, command line and reason in
//! every history entry. [`from_v1`]:
//! 1. copies each plan into the plans tree (idempotent: a migration cut short is redone);
//! 2. rewrites records and history entries in the compact format, each distinct actor of an
//!    operation once under `actor/OP/N`, and fills in typed fields older records lack;
//! 3. removes the old plan keys and sets the version, all in one atomic batch, then flushes.
//!
//! Until that batch is durable the database still says version 1, so a crash at any point
//! leaves either the old database or the new one, never a mix that would be read wrongly.

use std::collections::HashMap;

use super::format::{StoredActor, StoredEntry, StoredRecord};
use super::{decode, encode, seq_key, seq_of, HistoryEntry, StoreError, PLANS_TREE, VERSION_KEY};
use crate::plan::{FailureKind, PhaseRecord};

/// Rewrites a version-1 database `db` in the current format (see the module comment).
pub(super) fn from_v1(db: &sled::Db) -> Result<(), StoreError> {
    let plans = db.open_tree(PLANS_TREE)?;
    let mut batch = sled::Batch::default();
    for item in db.scan_prefix(b"plan/") {
        let (k, v) = item?;
        plans.insert(&k[b"plan/".len()..], v)?;
        batch.remove(k);
    }
    for item in db.scan_prefix(b"ph/") {
        let (k, v) = item?;
        let mut record: PhaseRecord = decode(&k, &v)?;
        upgrade_legacy_record(&mut record);
        batch.insert(k, encode(&StoredRecord::from(&record)));
    }
    // Actors by operation: each distinct one gets a number, in the order first seen.
    let mut actors: HashMap<(String, StoredActor), u64> = HashMap::new();
    let mut next_actor: HashMap<String, u64> = HashMap::new();
    for item in db.scan_prefix(b"hist/") {
        let (k, v) = item?;
        let entry: HistoryEntry = decode(&k, &v)?;
        let text = String::from_utf8_lossy(&k);
        let Some((op, seq)) = text["hist/".len()..].rsplit_once('/') else {
            continue;
        };
        let actor = StoredActor::of(&entry);
        let n = match actors.get(&(op.to_string(), actor.clone())) {
            Some(n) => *n,
            None => {
                let next = next_actor.entry(op.to_string()).or_default();
                let n = *next;
                *next += 1;
                batch.insert(seq_key("actor", op, n), encode(&actor));
                actors.insert((op.to_string(), actor), n);
                n
            }
        };
        debug_assert_eq!(seq_of(seq.as_bytes()), entry.seq);
        batch.insert(k.to_vec(), encode(&StoredEntry::of(&entry, n)));
    }
    batch.insert(VERSION_KEY, super::FORMAT_VERSION.to_string().as_bytes());
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// Fills in the typed fields of a record written before they existed, from its message text:
/// the skip reason (once only in the summary, "skipped: <reason>") and the failure on some
/// nodes ("N of M nodes failed: ..."). Done once, here, so that nothing else reads text.
pub(super) fn upgrade_legacy_record(r: &mut PhaseRecord) {
    if r.skipped && r.skip_reason.is_none() {
        r.skip_reason = r
            .summary
            .as_deref()
            .map(|s| s.strip_prefix("skipped: ").unwrap_or(s).to_string());
    }
    if matches!(r.failure, None | Some(FailureKind::Other)) {
        let counts = r.error.as_deref().and_then(|e| {
            let (counts, _) = e.split_once(" nodes failed")?;
            let (failed, total) = counts.split_once(" of ")?;
            Some((failed.parse().ok()?, total.parse().ok()?))
        });
        if let Some((failed, total)) = counts {
            r.failure = Some(FailureKind::NodesFailed { failed, total });
        }
    }
}
