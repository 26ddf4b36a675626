//! What can go wrong reaching etcd, one variant per failed step, and the [`Refusal`] kind of
//! an answer from the etcd server: the membership operations decide "done", "retry" or "fail"
//! by matching that kind, never the message.
//!
//! etcd says why it refused only in text (the gRPC status message, or etcdctl's stderr), so
//! [`Refusal::of`] reads that text once, where the error is made.

use std::path::PathBuf;

use crate::ssh::SshError;

/// What the etcd server's refusal means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `member not found`: a removal that already happened.
    MemberNotFound,
    /// `unhealthy cluster`: etcd refuses membership changes for a few seconds after a member
    /// (re)connects.
    UnhealthyCluster,
    /// A learner that is not in sync (or not started) yet cannot be promoted.
    LearnerNotReady,
    /// No answer in time, or the service is unavailable.
    Unavailable,
    Other,
}

impl Refusal {
    /// Classifies the text of an etcd error (the gRPC status, or etcdctl's last stderr line).
    pub(crate) fn of(text: &str) -> Refusal {
        if text.contains("member not found") {
            Refusal::MemberNotFound
        } else if text.contains("unhealthy cluster") {
            Refusal::UnhealthyCluster
        } else if text.contains("in sync")
            || text.contains("not started")
            || text.contains("learner")
        {
            Refusal::LearnerNotReady
        } else if text.contains("Timeout") || text.contains("unavailable") {
            Refusal::Unavailable
        } else {
            Refusal::Other
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EtcdError {
    // Choosing the transport from the inventory.
    #[error("the inventory {} lists no etcd endpoints (etcd: {{endpoints: [...]}})", .inventory.display())]
    NoEndpoints { inventory: PathBuf },
    #[error("the ssh transport needs a node to run etcdctl on (etcd: {{via: NODE}})")]
    NoViaNode,
    #[error("etcd via node `{node}` is not in the inventory")]
    ViaNotInInventory { node: String },
    #[error("etcd transport must be `direct` or `ssh`, not `{name}`")]
    UnknownTransport { name: String },

    // The direct transport.
    /// `what` is `etcd CA`, `etcd client cert` or `etcd client key`.
    #[error("read {what} {}: {source}", .path.display())]
    ReadTls {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connect to etcd at {endpoints}: no answer within {secs}s")]
    ConnectTimeout { endpoints: String, secs: u64 },
    #[error("connect to etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("no etcd endpoint answered: {}", .errors.join("; "))]
    NoEndpointAnswered { errors: Vec<String> },
    #[error("etcd member list: {source}")]
    MemberList { source: etcd_client::Error },
    #[error("etcd member remove {id}: {source}")]
    MemberRemove {
        id: String,
        kind: Refusal,
        source: etcd_client::Error,
    },
    /// The removal kept finding no leader, or no answer, until its deadline.
    #[error("etcd member remove {id}: {last}")]
    MemberRemoveGaveUp { id: String, last: String },
    #[error("etcd member add {name}: {source}")]
    MemberAdd {
        name: String,
        kind: Refusal,
        source: etcd_client::Error,
    },
    #[error("etcd member add returned no member")]
    NoMemberAdded,
    #[error("{source}")]
    MemberPromote {
        kind: Refusal,
        source: etcd_client::Error,
    },
    #[error("etcd snapshot: {source}")]
    Snapshot { source: etcd_client::Error },

    // The ssh transport (etcdctl on a node).
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("etcdctl on {node} did not answer within {secs}s")]
    EtcdctlTimeout { node: String, secs: u64 },
    #[error("run etcdctl on {node}: {source}")]
    EtcdctlRun {
        node: String,
        source: openssh::Error,
    },
    /// `status` is the exit code, or `a signal`; `tail` the last line etcdctl printed on stderr.
    #[error("etcdctl on {node} exited with {status}: {tail}")]
    EtcdctlExit {
        node: String,
        status: String,
        tail: String,
        kind: Refusal,
    },
    #[error("etcdctl on {node} printed something that is not JSON ({source}): {output}")]
    NotJson {
        node: String,
        output: String,
        source: serde_json::Error,
    },
    #[error("copy snapshot from {node}: {source}")]
    CopySnapshot {
        node: String,
        source: openssh::Error,
    },
    #[error("etcd snapshot on {node} failed: {stderr}")]
    RemoteSnapshot { node: String, stderr: String },

    // Maintenance (maintenance.rs).
    #[error("no etcd member reports a leader (quorum lost?)")]
    NoLeader,
    #[error("etcd move leader to {to}: {source}")]
    MoveLeader {
        to: String,
        source: etcd_client::Error,
    },
    #[error("etcd leadership did not move to {to} within 10s")]
    LeaderDidNotMove { to: String },
    #[error("etcd alarm: {source}")]
    Alarm { source: etcd_client::Error },
    #[error("etcd defragment {member}: {source}")]
    Defragment {
        member: String,
        source: etcd_client::Error,
    },
    #[error("etcd defragment {member}: no answer within {secs}s")]
    DefragmentTimeout { member: String, secs: u64 },
    #[error("etcd member {member} has not started (no client URL)")]
    MemberNotStarted { member: String },
    #[error("read snapshot {}: {source}", .path.display())]
    ReadSnapshot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("etcdctl snapshot status {path}: {detail}")]
    SnapshotStatus { path: String, detail: String },

    // Saving a snapshot on this machine.
    #[error("write {}: {source}", .path.display())]
    WriteSnapshot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rename {} to {}: {source}", .from.display(), .to.display())]
    RenameSnapshot {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

impl EtcdError {
    /// The server's refusal, for errors that carry an answer from etcd; `Other` for the rest.
    pub(crate) fn refusal(&self) -> Refusal {
        match self {
            EtcdError::MemberRemove { kind, .. }
            | EtcdError::MemberAdd { kind, .. }
            | EtcdError::MemberPromote { kind, .. }
            | EtcdError::EtcdctlExit { kind, .. } => *kind,
            _ => Refusal::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_from_what_etcd_says() {
        let cases = [
            ("Error: etcdserver: member not found", Refusal::MemberNotFound),
            (
                "grpc request error: code: 'The service is currently unavailable', message: \"etcdserver: unhealthy cluster\"",
                Refusal::UnhealthyCluster,
            ),
            (
                "Error: etcdserver: can only promote a learner member which is in sync with leader",
                Refusal::LearnerNotReady,
            ),
            (
                "grpc request error: code: 'The service is currently unavailable'",
                Refusal::Unavailable,
            ),
            ("transport error: Timeout expired", Refusal::Unavailable),
            ("Error: etcdserver: permission denied", Refusal::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(Refusal::of(text), kind, "{text}");
        }
    }
}
