//! etcd membership access over two transports with the same results:
//!
//! 1. **direct** (`direct.rs`): the `etcd-client` crate against the inventory's endpoints and
//!    TLS files;
//! 2. **ssh** (`etcdctl.rs`): `etcdctl -w json` run on a control-plane node through the SSH
//!    pool, for operators whose machine cannot reach etcd (TLS paths are then paths on that node).
//!
//! Failures are [`EtcdError`]s, one variant per step; an answer from the etcd server carries a
//! [`Refusal`] kind that callers match to decide retries. The quorum arithmetic used by the
//! guards is in `quorum.rs`, as plain functions.

mod direct;
mod error;
mod etcdctl;
mod maintenance;
mod quorum;

use std::time::Duration;

use serde::Serialize;

pub(crate) use error::{EtcdError, Refusal};
pub(crate) use maintenance::{snapshot_status, Alarm};
pub(crate) use quorum::{addition_refusal, removal_refusal, Quorum};

use crate::inventory::{EtcdSettings, Inventory, NodeEntry};
use crate::ssh::SshPool;
use etcdctl::Etcdctl;

/// How long a health probe of one member may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct MemberInfo {
    /// Hex, as etcdctl prints it.
    pub id: String,
    /// Empty while the member was added but never started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    pub started: bool,
}

impl MemberInfo {
    pub(crate) fn id_u64(&self) -> u64 {
        u64::from_str_radix(&self.id, 16).unwrap_or(0)
    }

    pub(crate) fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} (not started, {})", self.id, self.peer_urls.join(","))
        } else {
            self.name.clone()
        }
    }
}

pub(crate) fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses a member id as written by an operator: hex (etcdctl's table) or decimal (its JSON).
pub(crate) fn parse_id(text: &str) -> Option<u64> {
    let t = text.trim().trim_start_matches("0x");
    if t.len() == 16 || t.chars().any(|c| c.is_ascii_alphabetic()) {
        u64::from_str_radix(t, 16).ok()
    } else {
        t.parse::<u64>()
            .ok()
            .or_else(|| u64::from_str_radix(t, 16).ok())
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct MemberHealth {
    pub id: String,
    pub name: String,
    pub endpoint: Option<String>,
    pub healthy: bool,
    pub is_learner: bool,
    pub started: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct MemberStatus {
    pub endpoint: String,
    pub member_id: String,
    pub leader: String,
    pub is_leader: bool,
    pub raft_index: u64,
    pub raft_term: u64,
    /// The key-value store's revision this member has applied.
    pub revision: i64,
    pub db_size: i64,
    pub version: String,
}

/// How etcd is reached.
pub(crate) enum Transport {
    Direct(EtcdSettings),
    Ssh {
        node: NodeEntry,
        settings: EtcdSettings,
    },
}

impl Transport {
    /// From the inventory, with an optional per-phase override (`transport:`, `via:`).
    pub(crate) fn choose(
        inventory: &Inventory,
        transport: Option<&str>,
        via: Option<&str>,
    ) -> Result<Transport, EtcdError> {
        let settings = inventory.etcd.clone();
        let kind = transport
            .or(settings.transport.as_deref())
            .unwrap_or("direct");
        match kind {
            "direct" => {
                if settings.endpoints.is_empty() {
                    return Err(EtcdError::NoEndpoints {
                        inventory: inventory.path.clone(),
                    });
                }
                Ok(Transport::Direct(settings))
            }
            "ssh" => {
                let name = via
                    .or(settings.via.as_deref())
                    .map(|s| s.to_string())
                    .or_else(|| {
                        inventory
                            .nodes
                            .iter()
                            .find(|n| n.roles.iter().any(|r| r == "etcd" || r == "control-plane"))
                            .map(|n| n.name.clone())
                    });
                let Some(name) = name else {
                    return Err(EtcdError::NoViaNode);
                };
                let node = inventory
                    .node(&name)
                    .cloned()
                    .ok_or(EtcdError::ViaNotInInventory { node: name })?;
                Ok(Transport::Ssh { node, settings })
            }
            other => Err(EtcdError::UnknownTransport {
                name: other.to_string(),
            }),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Transport::Direct(s) => format!("directly at {}", s.endpoints.join(",")),
            Transport::Ssh { node, .. } => format!("with etcdctl on {} over ssh", node.name),
        }
    }

    /// [`direct::any_client`] with the failure as text, for the drill (which reports text).
    pub(crate) async fn any_client(settings: &EtcdSettings) -> Result<etcd_client::Client, String> {
        direct::any_client(settings)
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn member_list(&self, pool: &SshPool) -> Result<Vec<MemberInfo>, EtcdError> {
        match self {
            Transport::Direct(s) => direct::member_list(s).await,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .member_list()
                .await
            }
        }
    }

    /// Probes every member on its own client URLs, with a short timeout each.
    pub(crate) async fn health(&self, pool: &SshPool, members: &[MemberInfo]) -> Vec<MemberHealth> {
        match self {
            Transport::Direct(s) => direct::health(s, members).await,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .health(members)
                .await
            }
        }
    }

    pub(crate) async fn status(
        &self,
        pool: &SshPool,
        members: &[MemberInfo],
    ) -> Vec<Result<MemberStatus, String>> {
        match self {
            Transport::Direct(s) => direct::status(s, members).await,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .status(members)
                .await
            }
        }
    }

    /// Removes member `id`. The removal is a raft proposal: right after the leader died (often
    /// the very member being removed) it would wait for a leader that never answers, so first
    /// wait until a member reports a leader, and — when the member being removed is down — one
    /// other than it. Removing is idempotent ("member not found" counts as done), so a call that
    /// timed out is retried.
    pub(crate) async fn member_remove(
        &self,
        pool: &SshPool,
        id: u64,
        target_healthy: bool,
    ) -> Result<(), EtcdError> {
        match self {
            Transport::Direct(s) => direct::member_remove(s, id, target_healthy).await,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .member_remove(id)
                .await
            }
        }
    }

    pub(crate) async fn member_add(
        &self,
        pool: &SshPool,
        name: &str,
        peer_urls: &[String],
        learner: bool,
    ) -> Result<MemberInfo, EtcdError> {
        match self {
            Transport::Direct(s) => direct::member_add(s, name, peer_urls, learner).await,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .member_add(name, peer_urls, learner)
                .await
            }
        }
    }

    pub(crate) async fn member_promote(&self, pool: &SshPool, id: u64) -> Result<(), EtcdError> {
        match self {
            Transport::Direct(s) => direct::member_promote(s, id).await,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .member_promote(id)
                .await
            }
        }
    }

    /// Saves a snapshot to `path` on this machine (written to a temporary file, then renamed).
    pub(crate) async fn snapshot(
        &self,
        pool: &SshPool,
        path: &std::path::Path,
    ) -> Result<u64, EtcdError> {
        let partial = path.with_extension("part");
        let data = match self {
            Transport::Direct(s) => direct::snapshot(s).await?,
            Transport::Ssh { node, settings } => {
                Etcdctl {
                    node,
                    settings,
                    pool,
                }
                .snapshot()
                .await?
            }
        };
        std::fs::write(&partial, &data).map_err(|source| EtcdError::WriteSnapshot {
            path: partial.clone(),
            source,
        })?;
        std::fs::rename(&partial, path).map_err(|source| EtcdError::RenameSnapshot {
            from: partial.clone(),
            to: path.to_path_buf(),
            source,
        })?;
        Ok(data.len() as u64)
    }
}

/// gRPC errors are long; keep what an operator needs ("Connection refused", ...).
pub(crate) fn short_error(text: &str) -> String {
    for needle in [
        "Connection refused",
        "timed out",
        "deadline",
        "certificate",
        "unavailable",
    ] {
        if let Some(pos) = text.find(needle) {
            let end = text[pos..]
                .find(['"', ')', ','])
                .map(|e| pos + e)
                .unwrap_or(text.len());
            return text[pos..end].trim().to_string();
        }
    }
    text.chars().take(200).collect()
}

pub(crate) fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(|s| s.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_from_hex_or_decimal() {
        assert_eq!(parse_id("8e9e05c52164694d"), Some(0x8e9e05c52164694d));
        assert_eq!(parse_id("10276657743932975437"), Some(10276657743932975437));
        assert_eq!(hex_id(0x8e9e05c52164694d), "8e9e05c52164694d");
    }
}
