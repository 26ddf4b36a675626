//! What the store keeps besides phase records: operations, history entries, the executor lease,
//! and [`Commit`], the set of changes written as one batch; and [`Access`], what a command may
//! do to the state directory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{format_time, hostname, now_ms, process_is_stopped, process_start_ticks, LogLine};
use crate::plan::{PhaseId, PhaseRecord, PhaseState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Active,
    Completed,
    Failed,
}

impl OperationState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OperationState::Active => "active",
            OperationState::Completed => "completed",
            OperationState::Failed => "failed",
        }
    }
}

/// Who did something, from where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The command line, with secret values redacted.
    pub command: String,
}

/// One run of a procedure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub procedure: String,
    pub description: String,
    /// Parameter values; secret ones are not here (only their names, in `secret_params`).
    pub params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub secret_params: Vec<String>,
    pub created_at: u64,
    pub created_by: Actor,
    #[serde(default)]
    pub reason: Option<String>,
    pub state: OperationState,
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// sha256 of the plan's canonical JSON.
    pub fingerprint: String,
}

/// An entry of the append-only history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(default)]
    pub seq: u64,
    pub time: u64,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PhaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PhaseState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PhaseState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HistoryEntry {
    /// An entry for `event` done by `actor` now, for `reason`; phase, transition, error and
    /// detail are empty (set them with struct update syntax). The store assigns `seq`.
    pub(crate) fn new(event: impl Into<String>, actor: &Actor, reason: Option<String>) -> Self {
        HistoryEntry {
            seq: 0,
            time: now_ms(),
            user: actor.user.clone(),
            host: actor.host.clone(),
            pid: actor.pid,
            command: actor.command.clone(),
            reason,
            event: event.into(),
            phase: None,
            from: None,
            to: None,
            error: None,
            forced: false,
            detail: None,
        }
    }
}

/// Who is executing an operation now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub started_at: u64,
    pub heartbeat_at: u64,
    /// The holder's start time in clock ticks since boot, so a reused pid is not mistaken for it.
    #[serde(default)]
    pub proc_start: Option<u64>,
    pub command: String,
    /// Set by a store whose leases expire on their own (etcd): whether the holder's lease
    /// is live. Liveness then comes from the store, never from pids or heartbeats, which
    /// cannot be checked across machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_alive: Option<bool>,
}

/// A lease on another host counts as dead after this long without a heartbeat.
pub(crate) const LEASE_STALE_MS: u64 = 60_000;

impl Lease {
    pub(crate) fn is_alive(&self) -> bool {
        if let Some(alive) = self.store_alive {
            return alive;
        }
        if self.host == hostname() {
            match process_start_ticks(self.pid) {
                Some(start) => self.proc_start.is_none_or(|s| s == start),
                None => false,
            }
        } else {
            now_ms().saturating_sub(self.heartbeat_at) < LEASE_STALE_MS
        }
    }

    /// Whether the holder runs on this host and is stopped (Ctrl-Z, SIGSTOP).
    pub(crate) fn is_stopped(&self) -> bool {
        self.host == hostname() && process_is_stopped(self.pid)
    }

    pub(crate) fn describe(&self) -> String {
        let stopped = if self.is_stopped() {
            format!(
                " [stopped (suspended with Ctrl-Z or SIGSTOP): resume it with `fg` in its terminal or `kill -CONT {}`]",
                self.pid
            )
        } else {
            String::new()
        };
        format!(
            "pid {} on {} (user {}, since {}, last heartbeat {}): {}{stopped}",
            self.pid,
            self.host,
            self.user,
            format_time(self.started_at),
            format_time(self.heartbeat_at),
            self.command
        )
    }
}

/// A set of changes written as one atomic, flushed batch.
#[derive(Default, Debug)]
pub struct Commit {
    pub operation: Option<Operation>,
    pub plan: Option<Vec<u8>>,
    pub secrets: Option<BTreeMap<String, String>>,
    pub records: Vec<(PhaseId, PhaseRecord)>,
    pub history: Vec<HistoryEntry>,
    pub vars: Option<serde_json::Map<String, serde_json::Value>>,
    pub logs: Vec<LogLine>,
    /// `Some(None)` clears the lease.
    pub lease: Option<Option<Lease>>,
    /// Written now but flushed with the next commit (or on release) instead of at once. Used
    /// for the end of a phase: the next phase's start flushes it before that phase's action
    /// runs, which halves the flushes of a run without weakening what is durable when.
    pub defer_flush: bool,
}

impl Commit {
    pub(crate) fn is_empty(&self) -> bool {
        self.operation.is_none()
            && self.plan.is_none()
            && self.secrets.is_none()
            && self.records.is_empty()
            && self.history.is_empty()
            && self.vars.is_none()
            && self.logs.is_empty()
            && self.lease.is_none()
    }

    /// Writes the same changes, but flushes them only with the next commit or on release.
    pub(crate) fn deferred(self) -> Self {
        Commit {
            defer_flush: true,
            ..self
        }
    }
}

/// What a command may do to the state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only (`medic plan`, `operations`, `plan export|logs|history`): never creates
    /// anything, and works on a read-only or unwritable state directory (see
    /// [`Store::open_db`]).
    Read,
    /// Read and change an existing database (executors, `plan complete`); never creates one.
    Write,
    /// Create the state directory (mode 0700) and the database if missing: `medic start` only.
    Create,
}
