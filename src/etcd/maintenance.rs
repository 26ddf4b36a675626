//! etcd maintenance over both transports: moving leadership, alarms, defragmenting a member,
//! and reading a snapshot file on this machine.
//!
//! 1. `move_leader` finds the leader (`status` of every member), sends the request to it (etcd
//!    accepts a transfer only from the leader) and waits until a member reports the new one.
//! 2. `alarm_list` / `alarm_disarm` read or clear the cluster's alarms (NOSPACE, CORRUPT);
//!    disarming lists them first and deactivates each, as etcdctl does.
//! 3. `defragment` runs on one member's client URL (it blocks that member while it runs).
//! 4. [`snapshot_status`] runs `etcdctl snapshot status -w json` on the local file: the
//!    transport does not matter, the file is on this machine.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use serde::Serialize;

use super::direct::{any_client, connect_to};
use super::error::EtcdError;
use super::etcdctl::Etcdctl;
use super::{hex_id, MemberInfo, Transport};
use crate::ssh::SshPool;
use crate::template::shell_quote;

/// An active alarm: which member raised it and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Alarm {
    pub member_id: String,
    /// `NOSPACE`, `CORRUPT` (etcd's names).
    pub alarm: String,
}

/// What `etcdctl snapshot status` reads from a snapshot file, and the file's age.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SnapshotStatus {
    pub path: String,
    pub hash: u64,
    pub revision: u64,
    pub total_keys: u64,
    pub total_size: u64,
    /// Seconds since the file was last written.
    pub age_secs: u64,
}

fn alarm_name(code: i64) -> String {
    match code {
        1 => "NOSPACE".into(),
        2 => "CORRUPT".into(),
        other => format!("alarm {other}"),
    }
}

fn alarm_type(name: &str) -> AlarmType {
    match name {
        "NOSPACE" => AlarmType::Nospace,
        "CORRUPT" => AlarmType::Corrupt,
        _ => AlarmType::None,
    }
}

impl Transport {
    fn etcdctl<'a>(&'a self, pool: &'a SshPool) -> Option<Etcdctl<'a>> {
        match self {
            Transport::Direct(_) => None,
            Transport::Ssh { node, settings } => Some(Etcdctl {
                node,
                settings,
                pool,
            }),
        }
    }

    /// The current leader's id, from the members that answer `status`.
    pub(crate) async fn leader(&self, pool: &SshPool, members: &[MemberInfo]) -> Option<u64> {
        self.status(pool, members)
            .await
            .into_iter()
            .flatten()
            .map(|s| super::parse_id(&s.leader).unwrap_or(0))
            .find(|l| *l != 0)
    }

    /// Transfers leadership to member `to` and waits (up to 10 s) until a member reports it.
    /// Returns the previous leader; `to` already leading is no change.
    pub(crate) async fn move_leader(
        &self,
        pool: &SshPool,
        members: &[MemberInfo],
        to: u64,
    ) -> Result<u64, EtcdError> {
        let from = self
            .leader(pool, members)
            .await
            .ok_or(EtcdError::NoLeader)?;
        if from == to {
            return Ok(from);
        }
        let leader_url = members
            .iter()
            .find(|m| m.id_u64() == from)
            .and_then(|m| m.client_urls.first().cloned())
            .ok_or(EtcdError::NoLeader)?;
        match self {
            Transport::Direct(s) => {
                let mut c = connect_to(s, &leader_url).await?;
                c.move_leader(to)
                    .await
                    .map_err(|source| EtcdError::MoveLeader {
                        to: hex_id(to),
                        source,
                    })?;
            }
            Transport::Ssh { .. } => {
                let ctl = self.etcdctl(pool).expect("ssh transport");
                let args = format!(
                    "--endpoints={} move-leader {}",
                    shell_quote(&leader_url),
                    hex_id(to)
                );
                ctl.text(&args).await?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.leader(pool, members).await == Some(to) {
                return Ok(from);
            }
            if Instant::now() > deadline {
                return Err(EtcdError::LeaderDidNotMove { to: hex_id(to) });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn alarm_list(&self, pool: &SshPool) -> Result<Vec<Alarm>, EtcdError> {
        match self {
            Transport::Direct(s) => {
                let mut c = any_client(s).await?;
                let resp = c
                    .alarm(AlarmAction::Get, AlarmType::None, None)
                    .await
                    .map_err(|source| EtcdError::Alarm { source })?;
                Ok(resp
                    .alarms()
                    .iter()
                    .map(|a| Alarm {
                        member_id: hex_id(a.member_id()),
                        alarm: alarm_name(a.alarm() as i64),
                    })
                    .collect())
            }
            Transport::Ssh { .. } => {
                let v = self
                    .etcdctl(pool)
                    .expect("ssh transport")
                    .json("alarm list")
                    .await?;
                Ok(v["alarms"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|a| Alarm {
                                member_id: hex_id(a["memberID"].as_u64().unwrap_or(0)),
                                alarm: alarm_name(a["alarm"].as_i64().unwrap_or(0)),
                            })
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    /// Clears every active alarm; returns the ones it cleared.
    pub(crate) async fn alarm_disarm(&self, pool: &SshPool) -> Result<Vec<Alarm>, EtcdError> {
        let alarms = self.alarm_list(pool).await?;
        if alarms.is_empty() {
            return Ok(alarms);
        }
        match self {
            Transport::Direct(s) => {
                let mut c = any_client(s).await?;
                for a in &alarms {
                    let mut options = AlarmOptions::new();
                    options.with_member(super::parse_id(&a.member_id).unwrap_or(0));
                    c.alarm(AlarmAction::Deactivate, alarm_type(&a.alarm), Some(options))
                        .await
                        .map_err(|source| EtcdError::Alarm { source })?;
                }
            }
            Transport::Ssh { .. } => {
                self.etcdctl(pool)
                    .expect("ssh transport")
                    .json("alarm disarm")
                    .await?;
            }
        }
        Ok(alarms)
    }

    /// Defragments one member (on its own client URL).
    pub(crate) async fn defragment(
        &self,
        pool: &SshPool,
        member: &MemberInfo,
    ) -> Result<(), EtcdError> {
        let url = member
            .client_urls
            .first()
            .ok_or_else(|| EtcdError::MemberNotStarted {
                member: member.label(),
            })?;
        match self {
            Transport::Direct(s) => {
                let mut c = connect_to(s, url).await?;
                // A defragment rewrites the whole database: give it longer than a call.
                tokio::time::timeout(Duration::from_secs(300), c.defragment())
                    .await
                    .map_err(|_| EtcdError::DefragmentTimeout {
                        member: member.label(),
                        secs: 300,
                    })?
                    .map_err(|source| EtcdError::Defragment {
                        member: member.label(),
                        source,
                    })?;
            }
            Transport::Ssh { .. } => {
                let args = format!("--endpoints={} defrag", shell_quote(url));
                self.etcdctl(pool)
                    .expect("ssh transport")
                    .text(&args)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Reads a snapshot file on this machine with `etcdctl snapshot status` (local, read-only).
pub(crate) fn snapshot_status(path: &Path) -> Result<SnapshotStatus, EtcdError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| EtcdError::ReadSnapshot {
        path: path.to_path_buf(),
        source,
    })?;
    let age_secs = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| EtcdError::ReadSnapshot {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = if out.status.success() {
        serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::Value::Null
    };
    if !v.is_object() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(EtcdError::SnapshotStatus {
            path: shown,
            detail: stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("etcdctl printed no status")
                .trim()
                .to_string(),
        });
    }
    Ok(SnapshotStatus {
        path: shown,
        hash: v["hash"].as_u64().unwrap_or(0),
        revision: v["revision"].as_u64().unwrap_or(0),
        total_keys: v["totalKey"].as_u64().unwrap_or(0),
        total_size: v["totalSize"].as_u64().unwrap_or(0),
        age_secs,
    })
}
