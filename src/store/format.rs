//! How format version 2 stores phase records and history: short field names, defaults left
//! out, and the actor (user, host, pid, command line, reason) of a history entry written once
//! per invocation under `actor/OP/N` and referred to by number.
//!
//! 1. [`StoredRecord`] is a [`PhaseRecord`] without its defaults (`{"s":"completed","n":1,...}`).
//! 2. [`StoredEntry`] is a [`HistoryEntry`] less its actor and seq (the key holds the seq).
//! 3. [`StoredActor`] is what every entry of one invocation shares; [`ActorKey`] finds it again.
//!
//! A transition thus writes tens of bytes instead of hundreds: the journal of a 10,000-phase run
//! stays small, and so does the sled log a reader replays when it opens the database.

use serde::{Deserialize, Serialize};

use super::HistoryEntry;
use crate::plan::{FailureKind, PhaseId, PhaseRecord, PhaseState};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A phase record as stored (format 2).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredRecord {
    #[serde(rename = "s")]
    state: PhaseState,
    #[serde(rename = "rb", default, skip_serializing_if = "is_false")]
    rolling_back: bool,
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    attempts: u32,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    started_at: Option<u64>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    finished_at: Option<u64>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(rename = "k", default, skip_serializing_if = "is_false")]
    skipped: bool,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    failure: Option<FailureKind>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    skip_reason: Option<String>,
}

impl From<&PhaseRecord> for StoredRecord {
    fn from(r: &PhaseRecord) -> Self {
        StoredRecord {
            state: r.state,
            rolling_back: r.rolling_back,
            attempts: r.attempts,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error.clone(),
            summary: r.summary.clone(),
            skipped: r.skipped,
            failure: r.failure,
            skip_reason: r.skip_reason.clone(),
        }
    }
}

impl From<StoredRecord> for PhaseRecord {
    fn from(s: StoredRecord) -> Self {
        PhaseRecord {
            state: s.state,
            rolling_back: s.rolling_back,
            attempts: s.attempts,
            started_at: s.started_at,
            finished_at: s.finished_at,
            error: s.error,
            summary: s.summary,
            skipped: s.skipped,
            failure: s.failure,
            skip_reason: s.skip_reason,
        }
    }
}

/// Who wrote history entries, and why: one per invocation (and reason), shared by its entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(super) struct StoredActor {
    #[serde(rename = "u")]
    pub(super) user: String,
    #[serde(rename = "h")]
    pub(super) host: String,
    #[serde(rename = "p")]
    pub(super) pid: u32,
    #[serde(rename = "c")]
    pub(super) command: String,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
}

impl StoredActor {
    pub(super) fn of(e: &HistoryEntry) -> Self {
        StoredActor {
            user: e.user.clone(),
            host: e.host.clone(),
            pid: e.pid,
            command: e.command.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// A history entry as stored (format 2): its actor by number, its seq in the key.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredEntry {
    #[serde(rename = "t")]
    time: u64,
    #[serde(rename = "a")]
    actor: u64,
    #[serde(rename = "v")]
    event: String,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    phase: Option<PhaseId>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    from: Option<PhaseState>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    to: Option<PhaseState>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "F", default, skip_serializing_if = "is_false")]
    forced: bool,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl StoredEntry {
    pub(super) fn of(e: &HistoryEntry, actor: u64) -> Self {
        StoredEntry {
            time: e.time,
            actor,
            event: e.event.clone(),
            phase: e.phase.clone(),
            from: e.from,
            to: e.to,
            error: e.error.clone(),
            forced: e.forced,
            detail: e.detail.clone(),
        }
    }

    pub(super) fn actor(&self) -> u64 {
        self.actor
    }

    /// The entry with its `seq` (from the key) and its actor (`None`: a missing actor record,
    /// shown as unknown rather than failing the whole history).
    pub(super) fn into_entry(self, seq: u64, actor: Option<&StoredActor>) -> HistoryEntry {
        let unknown = || "?".to_string();
        HistoryEntry {
            seq,
            time: self.time,
            user: actor.map_or_else(unknown, |a| a.user.clone()),
            host: actor.map_or_else(unknown, |a| a.host.clone()),
            pid: actor.map_or(0, |a| a.pid),
            command: actor.map_or_else(unknown, |a| a.command.clone()),
            reason: actor.and_then(|a| a.reason.clone()),
            event: self.event,
            phase: self.phase,
            from: self.from,
            to: self.to,
            error: self.error,
            forced: self.forced,
            detail: self.detail,
        }
    }
}
