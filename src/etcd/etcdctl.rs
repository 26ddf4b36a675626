//! The ssh transport: `etcdctl -w json` run on a control-plane node through the SSH pool, for
//! operators whose machine cannot reach etcd (TLS paths are then paths on that node).
//!
//! The command line is built from quoted words ([`etcdctl_command`]) and run as `sh -c '...'`
//! over the node's master connection; a non-zero exit carries etcdctl's last stderr line,
//! classified into a [`Refusal`] where it is read.

use std::sync::Arc;

use super::error::{EtcdError, Refusal};
use super::{hex_id, json_strings, MemberHealth, MemberInfo, MemberStatus};
use super::{CALL_TIMEOUT, HEALTH_TIMEOUT};
use crate::inventory::{EtcdSettings, NodeEntry};
use crate::ssh::SshPool;
use crate::template::shell_quote;

/// etcdctl on one node, with the inventory's etcd settings.
pub(super) struct Etcdctl<'a> {
    pub node: &'a NodeEntry,
    pub settings: &'a EtcdSettings,
    pub pool: &'a SshPool,
}

/// `ETCDCTL_API=3 etcdctl -w json [--endpoints=...] [TLS flags] ARGS [|| true]`, every value
/// quoted. With `default_endpoints`, the inventory's endpoints are passed (ARGS may name its
/// own); `lenient` accepts a non-zero exit.
pub(super) fn etcdctl_command(
    settings: &EtcdSettings,
    args: &str,
    default_endpoints: bool,
    lenient: bool,
) -> String {
    let mut cmd = String::from("ETCDCTL_API=3 etcdctl -w json");
    if default_endpoints && !settings.endpoints.is_empty() {
        cmd.push_str(&format!(
            " --endpoints={}",
            shell_quote(&settings.endpoints.join(","))
        ));
    }
    for (flag, path) in [
        ("--cacert", &settings.ca),
        ("--cert", &settings.cert),
        ("--key", &settings.key),
    ] {
        if let Some(p) = path {
            cmd.push_str(&format!(
                " {flag}={}",
                shell_quote(&p.display().to_string())
            ));
        }
    }
    cmd.push(' ');
    cmd.push_str(args);
    if lenient {
        cmd.push_str(" || true");
    }
    cmd
}

impl Etcdctl<'_> {
    /// Runs etcdctl (see [`etcdctl_command`]) and parses what it printed.
    async fn run(
        &self,
        args: &str,
        default_endpoints: bool,
        lenient: bool,
    ) -> Result<serde_json::Value, EtcdError> {
        let cmd = etcdctl_command(self.settings, args, default_endpoints, lenient);
        let out = self.ssh_run(&cmd).await?;
        serde_json::from_str(out.trim()).map_err(|source| EtcdError::NotJson {
            node: self.node.name.clone(),
            output: out.trim().to_string(),
            source,
        })
    }

    async fn etcdctl(&self, args: &str) -> Result<serde_json::Value, EtcdError> {
        self.run(args, true, false).await
    }

    /// etcdctl with the inventory's endpoints, its JSON output parsed.
    pub(super) async fn json(&self, args: &str) -> Result<serde_json::Value, EtcdError> {
        self.etcdctl(args).await
    }

    /// etcdctl whose ARGS name their own `--endpoints`, for commands that print text
    /// (`move-leader`, `defrag`); a non-zero exit is an error.
    pub(super) async fn text(&self, args: &str) -> Result<String, EtcdError> {
        self.ssh_run(&etcdctl_command(self.settings, args, false, false))
            .await
    }

    /// etcdctl exits non-zero when an endpoint is unhealthy, but still prints JSON.
    async fn etcdctl_lenient(&self, args: &str) -> Result<serde_json::Value, EtcdError> {
        self.run(args, false, true).await
    }

    async fn ssh_run(&self, cmd: &str) -> Result<String, EtcdError> {
        let node = self.node;
        let line = format!("sh -c {}", shell_quote(cmd));
        let limit = CALL_TIMEOUT * 3;
        let run = |session: Arc<openssh::Session>| {
            let line = line.clone();
            async move {
                tokio::time::timeout(limit, session.arc_raw_command(line).output())
                    .await
                    .map_err(|_| EtcdError::EtcdctlTimeout {
                        node: node.name.clone(),
                        secs: limit.as_secs(),
                    })?
                    .map_err(|source| EtcdError::EtcdctlRun {
                        node: node.name.clone(),
                        source,
                    })
            }
        };
        // A master that went away while idle is replaced first; the command itself runs once
        // (a membership change must not be sent twice).
        let mut session = self.pool.session(node).await?;
        if session.check().await.is_err() {
            session = self.pool.reconnect(node).await?;
        }
        let output = run(session).await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            return Err(EtcdError::EtcdctlExit {
                node: node.name.clone(),
                status: output
                    .status
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or("a signal".into()),
                kind: Refusal::of(&tail),
                tail,
            });
        }
        Ok(stdout)
    }

    pub(super) async fn member_list(&self) -> Result<Vec<MemberInfo>, EtcdError> {
        let v = self.etcdctl("member list").await?;
        Ok(members_from_json(&v))
    }

    pub(super) async fn health(&self, members: &[MemberInfo]) -> Vec<MemberHealth> {
        let urls: Vec<String> = members.iter().flat_map(|m| m.client_urls.clone()).collect();
        let health = if urls.is_empty() {
            serde_json::Value::Array(Vec::new())
        } else {
            let args = format!(
                "--endpoints={} --command-timeout={}s endpoint health",
                shell_quote(&urls.join(",")),
                HEALTH_TIMEOUT.as_secs()
            );
            self.etcdctl_lenient(&args)
                .await
                .unwrap_or(serde_json::Value::Array(Vec::new()))
        };
        members
            .iter()
            .map(|m| {
                let entry = health.as_array().and_then(|list| {
                    list.iter().find(|e| {
                        m.client_urls
                            .iter()
                            .any(|u| e["endpoint"].as_str() == Some(u.as_str()))
                    })
                });
                MemberHealth {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    endpoint: m.client_urls.first().cloned(),
                    healthy: entry.is_some_and(|e| e["health"] == true),
                    is_learner: m.is_learner,
                    started: m.started,
                    error: if m.client_urls.is_empty() {
                        Some("not started".into())
                    } else {
                        entry
                            .and_then(|e| e["error"].as_str().map(|s| s.to_string()))
                            .or_else(|| entry.is_none().then(|| "no answer".to_string()))
                    },
                }
            })
            .collect()
    }

    pub(super) async fn status(&self, members: &[MemberInfo]) -> Vec<Result<MemberStatus, String>> {
        let urls: Vec<String> = members
            .iter()
            .flat_map(|m| m.client_urls.first().cloned())
            .collect();
        let args = format!(
            "--endpoints={} endpoint status",
            shell_quote(&urls.join(","))
        );
        match self.etcdctl_lenient(&args).await {
            Ok(serde_json::Value::Array(list)) => {
                list.iter().map(|e| Ok(status_from_json(e))).collect()
            }
            Ok(other) => vec![Err(format!("unexpected etcdctl output: {other}"))],
            Err(e) => vec![Err(e.to_string())],
        }
    }

    /// Removes member `id`; "member not found" counts as done.
    pub(super) async fn member_remove(&self, id: u64) -> Result<(), EtcdError> {
        match self.etcdctl(&format!("member remove {}", hex_id(id))).await {
            Ok(_) => Ok(()),
            Err(e) if e.refusal() == Refusal::MemberNotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn member_add(
        &self,
        name: &str,
        peer_urls: &[String],
        learner: bool,
    ) -> Result<MemberInfo, EtcdError> {
        let args = format!(
            "member add {} --peer-urls={}{}",
            shell_quote(name),
            shell_quote(&peer_urls.join(",")),
            if learner { " --learner" } else { "" }
        );
        let v = self.etcdctl(&args).await?;
        let m = &v["member"];
        Ok(MemberInfo {
            id: hex_id(m["ID"].as_u64().unwrap_or(0)),
            name: String::new(),
            peer_urls: json_strings(&m["peerURLs"]),
            client_urls: Vec::new(),
            is_learner: m["isLearner"].as_bool().unwrap_or(learner),
            started: false,
        })
    }

    pub(super) async fn member_promote(&self, id: u64) -> Result<(), EtcdError> {
        self.etcdctl(&format!("member promote {}", hex_id(id)))
            .await
            .map(|_| ())
    }

    /// The snapshot's bytes: saved on the node, then copied over the connection and removed.
    pub(super) async fn snapshot(&self) -> Result<Vec<u8>, EtcdError> {
        let node = self.node;
        let remote = format!("/tmp/medic-snapshot-{}.db", std::process::id());
        // etcdctl 3.4 takes a snapshot from one endpoint only: the first that gives one.
        for endpoint in &self.settings.endpoints {
            let args = format!(
                "--endpoints={} snapshot save {}",
                shell_quote(endpoint),
                shell_quote(&remote)
            );
            if self.text(&args).await.is_ok() {
                break;
            }
        }
        let session = self.pool.session(node).await?;
        let out = session
            .raw_command(format!(
                "sh -c {}",
                shell_quote(&format!("cat {r} && rm -f {r}", r = shell_quote(&remote)))
            ))
            .output()
            .await
            .map_err(|source| EtcdError::CopySnapshot {
                node: node.name.clone(),
                source,
            })?;
        if !out.status.success() || out.stdout.is_empty() {
            return Err(EtcdError::RemoteSnapshot {
                node: node.name.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}

/// One entry of `etcdctl -w json endpoint status`.
fn status_from_json(e: &serde_json::Value) -> MemberStatus {
    let st = &e["Status"];
    let member_id = st["header"]["member_id"].as_u64().unwrap_or(0);
    let leader = st["leader"].as_u64().unwrap_or(0);
    MemberStatus {
        endpoint: e["Endpoint"].as_str().unwrap_or_default().to_string(),
        member_id: hex_id(member_id),
        leader: hex_id(leader),
        is_leader: leader == member_id,
        raft_index: st["raftIndex"].as_u64().unwrap_or(0),
        raft_term: st["raftTerm"].as_u64().unwrap_or(0),
        revision: st["header"]["revision"].as_i64().unwrap_or(0),
        db_size: st["dbSize"].as_i64().unwrap_or(0),
        version: st["version"].as_str().unwrap_or_default().to_string(),
    }
}

/// Members from `etcdctl -w json member list`.
pub(super) fn members_from_json(v: &serde_json::Value) -> Vec<MemberInfo> {
    v["members"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    let name = m["name"].as_str().unwrap_or_default().to_string();
                    MemberInfo {
                        id: hex_id(m["ID"].as_u64().unwrap_or(0)),
                        started: !name.is_empty(),
                        name,
                        peer_urls: json_strings(&m["peerURLs"]),
                        client_urls: json_strings(&m["clientURLs"]),
                        is_learner: m["isLearner"].as_bool().unwrap_or(false),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_etcdctl_line_quotes_every_value() {
        let settings = EtcdSettings {
            endpoints: vec![
                "https://10.0.0.1:2379".into(),
                "https://10.0.0.2:2379".into(),
            ],
            ca: Some(PathBuf::from("/etc/kubernetes/pki/etcd/ca.crt")),
            cert: Some(PathBuf::from("/etc/pki/it's $(reboot).crt")),
            key: None,
            ..Default::default()
        };
        let words = |line: String| shlex::split(&line).expect("a valid shell line");
        assert_eq!(
            words(etcdctl_command(&settings, "member list", true, false)),
            [
                "ETCDCTL_API=3",
                "etcdctl",
                "-w",
                "json",
                "--endpoints=https://10.0.0.1:2379,https://10.0.0.2:2379",
                "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
                "--cert=/etc/pki/it's $(reboot).crt",
                "member",
                "list",
            ]
        );
        let lenient = etcdctl_command(&settings, "endpoint health", false, true);
        assert!(lenient.ends_with(" endpoint health || true"), "{lenient}");
        assert!(!lenient.contains("--endpoints"), "{lenient}");
    }

    #[test]
    fn members_and_status_from_etcdctl_json() {
        let v = serde_json::json!({"members": [
            {"ID": 10276657743932975437u64, "name": "cp-1", "peerURLs": ["https://10.0.0.1:2380"], "clientURLs": ["https://10.0.0.1:2379"]},
            {"ID": 1, "peerURLs": ["https://10.0.0.4:2380"], "isLearner": true}
        ]});
        let members = members_from_json(&v);
        assert_eq!(members[0].id, "8e9e05c52164694d");
        assert!(members[0].started && !members[0].is_learner);
        assert!(!members[1].started && members[1].is_learner);
        let st = status_from_json(
            &serde_json::json!({"Endpoint": "e", "Status": {"header": {"member_id": 5}, "leader": 5, "raftIndex": 9}}),
        );
        assert!(st.is_leader);
        assert_eq!(st.raft_index, 9);
    }
}
