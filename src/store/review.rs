//! What a change review binds to an operation, in its own sled tree (`reviews`, one key per
//! operation): the approval policy fixed at `start`, the approvals (who, when, for which plan
//! fingerprint), and the facts the dry-run showed (recorded at `start` and again at each
//! `approve`), which the drift gate compares with the cluster before destructive work, and
//! those read when a run stopped at a pause, which a late `resume` compares.
//!
//! The facts are a flat map from a readable label (`etcd: member cp-3`, `node cp-3: Ready`)
//! to a value, so a difference names itself without knowing where it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{encode, Store, StoreError};

const TREE: &str = "reviews";

/// When an operation needs approval (from its procedure's `approval:` and the inventory's
/// `policy:`), fixed when the operation is created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApprovalPolicy {
    pub(crate) required: bool,
    /// How many approvals (by distinct people) it needs.
    pub(crate) count: u32,
    /// The operation's creator's own approval does not count.
    pub(crate) distinct_from_creator: bool,
    /// Where the policy came from (`procedure`, `inventory`), for messages.
    #[serde(default)]
    pub(crate) from: Vec<String>,
}

/// One `medic plan approve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Approval {
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) at: u64,
    /// The plan fingerprint approved (sha256 of the plan).
    pub(crate) fingerprint: String,
    pub(crate) reason: String,
}

impl Approval {
    pub(crate) fn who(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }
}

/// The facts a dry-run showed, when they were read, and by which step (`start`, `approve`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Facts {
    pub(crate) taken_at: u64,
    pub(crate) at: String,
    pub(crate) items: BTreeMap<String, String>,
}

/// Everything a review bound to one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Review {
    pub(crate) policy: ApprovalPolicy,
    pub(crate) approvals: Vec<Approval>,
    pub(crate) facts: Option<Facts>,
    /// The facts read when a run last stopped at a pause: a `resume` after a long pause
    /// (the inventory's `policy.drift_recheck_after`) compares the cluster with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) paused: Option<Facts>,
}

impl Store {
    /// The review of operation `op` (empty if nothing was recorded).
    pub(crate) fn review(&mut self, op: &str) -> Result<Review, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.review(op);
        }
        let tree = self.db()?.open_tree(TREE)?;
        match tree.get(op.as_bytes())? {
            Some(v) => super::decode(op.as_bytes(), &v),
            None => Ok(Review::default()),
        }
    }

    /// Replaces the review of operation `op` and flushes it.
    pub(crate) fn put_review(&mut self, op: &str, review: &Review) -> Result<(), StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.put_review(op, review);
        }
        if self.read_copy.is_some() {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
        }
        let tree = self.db()?.open_tree(TREE)?;
        let written = tree
            .insert(op.as_bytes(), encode(review))
            .and_then(|_| tree.flush().map(|_| ()));
        written.map_err(|e| self.write_failure(e))
    }
}
