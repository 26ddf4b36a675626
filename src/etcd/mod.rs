//! etcd membership access over two transports with the same results:
//!
//! 1. **direct**: the `etcd-client` crate against the inventory's endpoints and TLS files;
//! 2. **ssh**: `etcdctl -w json` run on a control-plane node through the SSH pool, for
//!    operators whose machine cannot reach etcd (TLS paths are then paths on that node).
//!
//! The quorum arithmetic used by the guards lives here too, as plain functions.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};
use serde::Serialize;

use crate::inventory::{EtcdSettings, Inventory, NodeEntry};
use crate::ssh::SshPool;
use crate::template::shell_quote;

/// How long a health probe of one member may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
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
    pub fn id_u64(&self) -> u64 {
        u64::from_str_radix(&self.id, 16).unwrap_or(0)
    }

    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} (not started, {})", self.id, self.peer_urls.join(","))
        } else {
            self.name.clone()
        }
    }
}

pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses a member id as written by an operator: hex (etcdctl's table) or decimal (its JSON).
pub fn parse_id(text: &str) -> Option<u64> {
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
pub struct MemberHealth {
    pub id: String,
    pub name: String,
    pub endpoint: Option<String>,
    pub healthy: bool,
    pub is_learner: bool,
    pub started: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub endpoint: String,
    pub member_id: String,
    pub leader: String,
    pub is_leader: bool,
    pub raft_index: u64,
    pub raft_term: u64,
    pub db_size: i64,
    pub version: String,
}

/// Size of a voting membership and what it can survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Quorum {
    pub members: usize,
    pub quorum: usize,
    pub tolerates: usize,
}

impl Quorum {
    pub fn of(members: usize) -> Quorum {
        let quorum = members / 2 + 1;
        Quorum {
            members,
            quorum,
            tolerates: members.saturating_sub(quorum),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} member{} (quorum {}, tolerates {} failure{})",
            self.members,
            if self.members == 1 { "" } else { "s" },
            self.quorum,
            self.tolerates,
            if self.tolerates == 1 { "" } else { "s" }
        )
    }
}

/// Why removing `target` would be unsafe, if it would. `health` covers every member.
pub fn removal_refusal(target: &MemberInfo, health: &[MemberHealth]) -> Option<String> {
    if target.is_learner {
        return None;
    }
    let voting: Vec<&MemberHealth> = health.iter().filter(|h| !h.is_learner).collect();
    let before = Quorum::of(voting.len());
    let after = Quorum::of(voting.len().saturating_sub(1));
    let survivors: Vec<&&MemberHealth> = voting.iter().filter(|h| h.id != target.id).collect();
    let healthy: Vec<String> = survivors
        .iter()
        .filter(|h| h.healthy && h.started)
        .map(|h| h.name.clone())
        .collect();
    let unhealthy: Vec<String> = survivors
        .iter()
        .filter(|h| !(h.healthy && h.started))
        .map(|h| {
            format!(
                "{} ({})",
                if h.name.is_empty() {
                    h.id.clone()
                } else {
                    h.name.clone()
                },
                h.error.clone().unwrap_or_else(|| "not started".into())
            )
        })
        .collect();
    if before.members <= 2 {
        return Some(format!(
            "removing {} from a cluster of {} leaves {}; a cluster of two or fewer members cannot lose one safely. Add a replacement first, or pass --force (recorded in history)",
            target.label(),
            before.describe(),
            after.describe()
        ));
    }
    if healthy.len() < after.quorum {
        return Some(format!(
            "removing {} changes the cluster from {} to {}, but only {} of the remaining members {} started and healthy ({}){}; that is below the quorum of {}, so etcd would stop serving. Bring members back first, or pass --force (recorded in history)",
            target.label(),
            before.describe(),
            after.describe(),
            healthy.len(),
            if healthy.len() == 1 { "is" } else { "are" },
            if healthy.is_empty() { "none".to_string() } else { healthy.join(", ") },
            if unhealthy.is_empty() { String::new() } else { format!("; not healthy: {}", unhealthy.join(", ")) },
            after.quorum
        ));
    }
    None
}

/// Why adding a member would be unsafe, if it would.
pub fn addition_refusal(
    peer_urls: &[String],
    learner: bool,
    health: &[MemberHealth],
    members: &[MemberInfo],
) -> Option<String> {
    let pending: Vec<&MemberInfo> = members
        .iter()
        .filter(|m| !m.started && !m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        .collect();
    if let Some(p) = pending.first() {
        return Some(format!(
            "member {} ({}) was added but never started; adding another before it starts can cost quorum (the add-before-remove trap). Start it or remove it first, or pass --force (recorded in history)",
            p.id,
            p.peer_urls.join(",")
        ));
    }
    if learner {
        return None;
    }
    let voting: Vec<&MemberHealth> = health.iter().filter(|h| !h.is_learner).collect();
    let before = Quorum::of(voting.len());
    let after = Quorum::of(voting.len() + 1);
    let healthy = voting.iter().filter(|h| h.healthy && h.started).count();
    if healthy < after.quorum {
        return Some(format!(
            "adding a voting member changes the cluster from {} to {}, but only {healthy} member{} healthy, below the new quorum of {}; the cluster would stop serving until the new member starts. Add it as a learner (learner: true), or pass --force (recorded in history)",
            before.describe(),
            after.describe(),
            if healthy == 1 { " is" } else { "s are" },
            after.quorum
        ));
    }
    None
}

/// How etcd is reached.
pub enum Transport {
    Direct(EtcdSettings),
    Ssh {
        node: NodeEntry,
        settings: EtcdSettings,
    },
}

impl Transport {
    /// From the inventory, with an optional per-phase override (`transport:`, `via:`).
    pub fn choose(
        inventory: &Inventory,
        transport: Option<&str>,
        via: Option<&str>,
    ) -> Result<Transport, String> {
        let settings = inventory.etcd.clone();
        let kind = transport
            .or(settings.transport.as_deref())
            .unwrap_or("direct");
        match kind {
            "direct" => {
                if settings.endpoints.is_empty() {
                    return Err(format!(
                        "the inventory {} lists no etcd endpoints (etcd: {{endpoints: [...]}})",
                        inventory.path.display()
                    ));
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
                    return Err(
                        "the ssh transport needs a node to run etcdctl on (etcd: {via: NODE})"
                            .into(),
                    );
                };
                let node = inventory
                    .node(&name)
                    .cloned()
                    .ok_or_else(|| format!("etcd via node `{name}` is not in the inventory"))?;
                Ok(Transport::Ssh { node, settings })
            }
            other => Err(format!(
                "etcd transport must be `direct` or `ssh`, not `{other}`"
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Direct(s) => format!("directly at {}", s.endpoints.join(",")),
            Transport::Ssh { node, .. } => format!("with etcdctl on {} over ssh", node.name),
        }
    }

    fn tls(settings: &EtcdSettings) -> Result<Option<TlsOptions>, String> {
        let mut tls = TlsOptions::new();
        let mut any = false;
        if let Some(ca) = &settings.ca {
            let pem =
                std::fs::read(ca).map_err(|e| format!("read etcd CA {}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
            any = true;
        }
        if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
            let c = std::fs::read(cert)
                .map_err(|e| format!("read etcd client cert {}: {e}", cert.display()))?;
            let k = std::fs::read(key)
                .map_err(|e| format!("read etcd client key {}: {e}", key.display()))?;
            tls = tls.identity(Identity::from_pem(c, k));
            any = true;
        }
        Ok(any.then_some(tls))
    }

    async fn client(
        settings: &EtcdSettings,
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<Client, String> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout.max(CALL_TIMEOUT.min(timeout * 5)));
        if let Some(tls) = Self::tls(settings)? {
            options = options.with_tls(tls);
        }
        let connect = Client::connect(endpoints, Some(options));
        tokio::time::timeout(timeout + Duration::from_secs(1), connect)
            .await
            .map_err(|_| {
                format!(
                    "connect to etcd at {}: no answer within {}s",
                    endpoints.join(","),
                    timeout.as_secs()
                )
            })?
            .map_err(|e| format!("connect to etcd at {}: {e}", endpoints.join(",")))
    }

    /// A client on the first endpoint that answers: a dead member must not fail the call
    /// (the crate's balanced channel may route a request to it).
    pub(crate) async fn any_client(settings: &EtcdSettings) -> Result<Client, String> {
        let mut errors = Vec::new();
        for endpoint in &settings.endpoints {
            match Self::client(settings, std::slice::from_ref(endpoint), HEALTH_TIMEOUT).await {
                Ok(mut c) => match tokio::time::timeout(HEALTH_TIMEOUT, c.status()).await {
                    Ok(Ok(_)) => {
                        return Self::client(settings, std::slice::from_ref(endpoint), CALL_TIMEOUT)
                            .await
                    }
                    Ok(Err(e)) => {
                        errors.push(format!("{endpoint}: {}", short_error(&e.to_string())))
                    }
                    Err(_) => errors.push(format!("{endpoint}: no answer")),
                },
                Err(e) => errors.push(short_error(&e)),
            }
        }
        Err(format!("no etcd endpoint answered: {}", errors.join("; ")))
    }

    /// Runs `etcdctl -w json ARGS` on the via node. With `default_endpoints`, the inventory's
    /// endpoints are passed (ARGS may name its own); `lenient` accepts a non-zero exit (etcdctl
    /// reports unhealthy endpoints that way but still prints JSON).
    async fn etcdctl_run(
        &self,
        pool: &SshPool,
        args: &str,
        default_endpoints: bool,
        lenient: bool,
    ) -> Result<serde_json::Value, String> {
        let Transport::Ssh { node, settings } = self else {
            unreachable!("ssh transport only")
        };
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
        let out = self.ssh_run(pool, node, &cmd).await?;
        serde_json::from_str(out.trim()).map_err(|e| {
            format!(
                "etcdctl on {} printed something that is not JSON ({e}): {}",
                node.name,
                out.trim()
            )
        })
    }

    async fn etcdctl(&self, pool: &SshPool, args: &str) -> Result<serde_json::Value, String> {
        self.etcdctl_run(pool, args, true, false).await
    }

    async fn etcdctl_lenient(
        &self,
        pool: &SshPool,
        args: &str,
    ) -> Result<serde_json::Value, String> {
        self.etcdctl_run(pool, args, false, true).await
    }

    async fn ssh_run(&self, pool: &SshPool, node: &NodeEntry, cmd: &str) -> Result<String, String> {
        let line = format!("sh -c {}", shell_quote(cmd));
        let run = |session: std::sync::Arc<openssh::Session>| {
            let line = line.clone();
            async move {
                tokio::time::timeout(CALL_TIMEOUT * 3, session.arc_raw_command(line).output())
                    .await
                    .map_err(|_| {
                        format!(
                            "etcdctl on {} did not answer within {}s",
                            node.name,
                            (CALL_TIMEOUT * 3).as_secs()
                        )
                    })?
                    .map_err(|e| format!("run etcdctl on {}: {e}", node.name))
            }
        };
        // A master that went away while idle is replaced first; the command itself runs once
        // (a membership change must not be sent twice).
        let mut session = pool.session(node).await?;
        if session.check().await.is_err() {
            session = pool.reconnect(node).await?;
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
            return Err(format!(
                "etcdctl on {} exited with {}: {tail}",
                node.name,
                output
                    .status
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or("a signal".into())
            ));
        }
        Ok(stdout)
    }

    pub async fn member_list(&self, pool: &SshPool) -> Result<Vec<MemberInfo>, String> {
        match self {
            Transport::Direct(s) => {
                let mut client = Self::any_client(s).await?;
                let resp = client
                    .member_list()
                    .await
                    .map_err(|e| format!("etcd member list: {e}"))?;
                Ok(resp
                    .members()
                    .iter()
                    .map(|m| MemberInfo {
                        id: hex_id(m.id()),
                        name: m.name().to_string(),
                        peer_urls: m.peer_urls().to_vec(),
                        client_urls: m.client_urls().to_vec(),
                        is_learner: m.is_learner(),
                        started: !m.name().is_empty(),
                    })
                    .collect())
            }
            Transport::Ssh { .. } => {
                let v = self.etcdctl(pool, "member list").await?;
                Ok(members_from_json(&v))
            }
        }
    }

    /// Probes every member on its own client URLs, with a short timeout each.
    pub async fn health(&self, pool: &SshPool, members: &[MemberInfo]) -> Vec<MemberHealth> {
        let mut out = Vec::new();
        match self {
            Transport::Direct(s) => {
                let probes = members.iter().map(|m| async move {
                    let mut h = MemberHealth {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        endpoint: m.client_urls.first().cloned(),
                        healthy: false,
                        is_learner: m.is_learner,
                        started: m.started,
                        error: None,
                    };
                    if m.client_urls.is_empty() {
                        h.error = Some("not started".into());
                        return h;
                    }
                    match Self::client(s, &m.client_urls, HEALTH_TIMEOUT).await {
                        Ok(mut c) => match tokio::time::timeout(HEALTH_TIMEOUT, c.status()).await {
                            Ok(Ok(_)) => h.healthy = true,
                            Ok(Err(e)) => h.error = Some(short_error(&e.to_string())),
                            Err(_) => {
                                h.error =
                                    Some(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs()))
                            }
                        },
                        Err(e) => h.error = Some(short_error(&e)),
                    }
                    h
                });
                for probe in probes {
                    out.push(probe.await);
                }
            }
            Transport::Ssh { .. } => {
                let urls: Vec<String> =
                    members.iter().flat_map(|m| m.client_urls.clone()).collect();
                let health = if urls.is_empty() {
                    serde_json::Value::Array(Vec::new())
                } else {
                    let args = format!(
                        "--endpoints={} --command-timeout={}s endpoint health",
                        shell_quote(&urls.join(",")),
                        HEALTH_TIMEOUT.as_secs()
                    );
                    // etcdctl exits non-zero when an endpoint is unhealthy but still prints JSON.
                    self.etcdctl_lenient(pool, &args)
                        .await
                        .unwrap_or(serde_json::Value::Array(Vec::new()))
                };
                for m in members {
                    let entry = health.as_array().and_then(|list| {
                        list.iter().find(|e| {
                            m.client_urls
                                .iter()
                                .any(|u| e["endpoint"].as_str() == Some(u.as_str()))
                        })
                    });
                    out.push(MemberHealth {
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
                    });
                }
            }
        }
        out
    }

    pub async fn status(
        &self,
        pool: &SshPool,
        members: &[MemberInfo],
    ) -> Vec<Result<MemberStatus, String>> {
        let mut out = Vec::new();
        match self {
            Transport::Direct(s) => {
                for m in members.iter().filter(|m| !m.client_urls.is_empty()) {
                    let r = async {
                        let mut c = Self::client(s, &m.client_urls, HEALTH_TIMEOUT).await?;
                        let st = c.status().await.map_err(|e| e.to_string())?;
                        let member_id = st.header().map(|h| h.member_id()).unwrap_or(0);
                        Ok(MemberStatus {
                            endpoint: m.client_urls[0].clone(),
                            member_id: hex_id(member_id),
                            leader: hex_id(st.leader()),
                            is_leader: st.leader() == member_id,
                            raft_index: st.raft_index(),
                            raft_term: st.raft_term(),
                            db_size: st.db_size(),
                            version: st.version().to_string(),
                        })
                    };
                    out.push(r.await);
                }
            }
            Transport::Ssh { .. } => {
                let urls: Vec<String> = members
                    .iter()
                    .flat_map(|m| m.client_urls.first().cloned())
                    .collect();
                let args = format!(
                    "--endpoints={} endpoint status",
                    shell_quote(&urls.join(","))
                );
                match self.etcdctl_lenient(pool, &args).await {
                    Ok(serde_json::Value::Array(list)) => {
                        for e in list {
                            let st = &e["Status"];
                            let member_id = st["header"]["member_id"].as_u64().unwrap_or(0);
                            let leader = st["leader"].as_u64().unwrap_or(0);
                            out.push(Ok(MemberStatus {
                                endpoint: e["Endpoint"].as_str().unwrap_or_default().to_string(),
                                member_id: hex_id(member_id),
                                leader: hex_id(leader),
                                is_leader: leader == member_id,
                                raft_index: st["raftIndex"].as_u64().unwrap_or(0),
                                raft_term: st["raftTerm"].as_u64().unwrap_or(0),
                                db_size: st["dbSize"].as_i64().unwrap_or(0),
                                version: st["version"].as_str().unwrap_or_default().to_string(),
                            }));
                        }
                    }
                    Ok(other) => out.push(Err(format!("unexpected etcdctl output: {other}"))),
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        out
    }

    /// Removes member `id`. The removal is a raft proposal: right after the leader died (often
    /// the very member being removed) it would wait for a leader that never answers, so first
    /// wait until a member reports a leader, and — when the member being removed is down — one
    /// other than it. Removing is idempotent ("member not found" counts as done), so a call that
    /// timed out is retried.
    pub async fn member_remove(
        &self,
        pool: &SshPool,
        id: u64,
        target_healthy: bool,
    ) -> Result<(), String> {
        match self {
            Transport::Direct(s) => {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                let mut last = String::new();
                while std::time::Instant::now() < deadline {
                    let mut client = match Self::any_client(s).await {
                        Ok(c) => c,
                        Err(e) => {
                            last = e;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            continue;
                        }
                    };
                    let leader = client.status().await.map(|st| st.leader()).unwrap_or(0);
                    if leader == 0 || (leader == id && !target_healthy) {
                        last = format!(
                            "no leader among the surviving members yet (leader {})",
                            hex_id(leader)
                        );
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                    match tokio::time::timeout(Duration::from_secs(5), client.member_remove(id))
                        .await
                    {
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(e)) if e.to_string().contains("member not found") => return Ok(()),
                        Ok(Err(e))
                            if e.to_string().contains("Timeout")
                                || e.to_string().contains("unavailable") =>
                        {
                            last = short_error(&e.to_string());
                        }
                        Ok(Err(e)) => {
                            return Err(format!("etcd member remove {}: {e}", hex_id(id)))
                        }
                        Err(_) => last = "no answer within 5s".into(),
                    }
                }
                Err(format!("etcd member remove {}: {last}", hex_id(id)))
            }
            Transport::Ssh { .. } => match self
                .etcdctl(pool, &format!("member remove {}", hex_id(id)))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.contains("member not found") => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    pub async fn member_add(
        &self,
        pool: &SshPool,
        name: &str,
        peer_urls: &[String],
        learner: bool,
    ) -> Result<MemberInfo, String> {
        match self {
            Transport::Direct(s) => {
                let mut client = Self::any_client(s).await?;
                let options = learner.then(|| MemberAddOptions::new().with_is_learner());
                let resp = client
                    .member_add(peer_urls, options)
                    .await
                    .map_err(|e| format!("etcd member add {name}: {e}"))?;
                let m = resp.member().ok_or("etcd member add returned no member")?;
                Ok(MemberInfo {
                    id: hex_id(m.id()),
                    name: m.name().to_string(),
                    peer_urls: m.peer_urls().to_vec(),
                    client_urls: m.client_urls().to_vec(),
                    is_learner: m.is_learner(),
                    started: false,
                })
            }
            Transport::Ssh { .. } => {
                let args = format!(
                    "member add {} --peer-urls={}{}",
                    shell_quote(name),
                    shell_quote(&peer_urls.join(",")),
                    if learner { " --learner" } else { "" }
                );
                let v = self.etcdctl(pool, &args).await?;
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
        }
    }

    pub async fn member_promote(&self, pool: &SshPool, id: u64) -> Result<(), String> {
        match self {
            Transport::Direct(s) => {
                let mut client = Self::any_client(s).await?;
                client
                    .member_promote(id)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Transport::Ssh { .. } => self
                .etcdctl(pool, &format!("member promote {}", hex_id(id)))
                .await
                .map(|_| ()),
        }
    }

    /// Saves a snapshot to `path` on this machine (written to a temporary file, then renamed).
    pub async fn snapshot(&self, pool: &SshPool, path: &std::path::Path) -> Result<u64, String> {
        let partial = path.with_extension("part");
        let size = match self {
            Transport::Direct(s) => {
                let mut client = Self::any_client(s).await?;
                let mut stream = client
                    .snapshot()
                    .await
                    .map_err(|e| format!("etcd snapshot: {e}"))?;
                let mut data = Vec::new();
                while let Some(chunk) = stream
                    .message()
                    .await
                    .map_err(|e| format!("etcd snapshot: {e}"))?
                {
                    data.extend_from_slice(chunk.blob());
                }
                std::fs::write(&partial, &data)
                    .map_err(|e| format!("write {}: {e}", partial.display()))?;
                data.len() as u64
            }
            Transport::Ssh { node, .. } => {
                let remote = format!("/tmp/medic-snapshot-{}.db", std::process::id());
                self.etcdctl(pool, &format!("snapshot save {}", shell_quote(&remote)))
                    .await
                    .ok();
                let session = pool.session(node).await?;
                let out = session
                    .raw_command(format!(
                        "sh -c {}",
                        shell_quote(&format!("cat {r} && rm -f {r}", r = shell_quote(&remote)))
                    ))
                    .output()
                    .await
                    .map_err(|e| format!("copy snapshot from {}: {e}", node.name))?;
                if !out.status.success() || out.stdout.is_empty() {
                    return Err(format!(
                        "etcd snapshot on {} failed: {}",
                        node.name,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                std::fs::write(&partial, &out.stdout)
                    .map_err(|e| format!("write {}: {e}", partial.display()))?;
                out.stdout.len() as u64
            }
        };
        std::fs::rename(&partial, path)
            .map_err(|e| format!("rename {} to {}: {e}", partial.display(), path.display()))?;
        Ok(size)
    }
}

/// gRPC errors are long; keep what an operator needs ("Connection refused", ...).
pub fn short_error(text: &str) -> String {
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

fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(|s| s.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Members from `etcdctl -w json member list`.
pub fn members_from_json(v: &serde_json::Value) -> Vec<MemberInfo> {
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
    use super::*;

    fn h(name: &str, healthy: bool) -> MemberHealth {
        MemberHealth {
            id: name.to_string(),
            name: name.to_string(),
            endpoint: None,
            healthy,
            is_learner: false,
            started: true,
            error: (!healthy).then(|| "connection refused".to_string()),
        }
    }

    fn m(name: &str) -> MemberInfo {
        MemberInfo {
            id: name.to_string(),
            name: name.to_string(),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![],
            is_learner: false,
            started: true,
        }
    }

    #[test]
    fn quorum_arithmetic() {
        assert_eq!(
            Quorum::of(3),
            Quorum {
                members: 3,
                quorum: 2,
                tolerates: 1
            }
        );
        assert_eq!(
            Quorum::of(5),
            Quorum {
                members: 5,
                quorum: 3,
                tolerates: 2
            }
        );
        assert_eq!(
            Quorum::of(2),
            Quorum {
                members: 2,
                quorum: 2,
                tolerates: 0
            }
        );
        assert_eq!(Quorum::of(1).tolerates, 0);
    }

    #[test]
    fn removal_guard_table() {
        // Removing the dead one of three: fine.
        assert!(removal_refusal(&m("c"), &[h("a", true), h("b", true), h("c", false)]).is_none());
        // Removing a healthy one while another is down: refused, with the arithmetic.
        let r = removal_refusal(&m("c"), &[h("a", true), h("b", false), h("c", true)]).unwrap();
        assert!(r.contains("from 3 members (quorum 2, tolerates 1 failure) to 2 members (quorum 2, tolerates 0 failures)"), "{r}");
        assert!(r.contains("only 1 of the remaining members is started and healthy (a); not healthy: b (connection refused)"), "{r}");
        // Two members: always refused.
        assert!(removal_refusal(&m("b"), &[h("a", true), h("b", false)])
            .unwrap()
            .contains("two or fewer"));
        // Five with one down: removing it is fine; removing a healthy one is fine too (3 of 4 healthy).
        let five = [
            h("a", true),
            h("b", true),
            h("c", true),
            h("d", true),
            h("e", false),
        ];
        assert!(removal_refusal(&m("e"), &five).is_none());
        assert!(removal_refusal(&m("a"), &five).is_none());
    }

    #[test]
    fn addition_guard_table() {
        let healthy3 = [h("a", true), h("b", true), h("c", true)];
        let members3 = [m("a"), m("b"), m("c")];
        assert!(addition_refusal(&["http://d:2380".into()], false, &healthy3, &members3).is_none());
        let mut pending = members3.to_vec();
        pending.push(MemberInfo {
            name: String::new(),
            started: false,
            ..m("x")
        });
        let r = addition_refusal(&["http://d:2380".into()], true, &healthy3, &pending).unwrap();
        assert!(r.contains("add-before-remove"), "{r}");
        // The pending member is the one being added again: not a trap (idempotent retry).
        assert!(addition_refusal(&["http://x:2380".into()], true, &healthy3, &pending).is_none());
        // Two of three healthy: a fourth voter needs 3 healthy → refused; a learner is fine.
        let degraded = [h("a", true), h("b", true), h("c", false)];
        assert!(
            addition_refusal(&["http://d:2380".into()], false, &degraded, &members3)
                .unwrap()
                .contains("new quorum of 3")
        );
        assert!(addition_refusal(&["http://d:2380".into()], true, &degraded, &members3).is_none());
    }

    #[test]
    fn ids_parse_from_hex_or_decimal() {
        assert_eq!(parse_id("8e9e05c52164694d"), Some(0x8e9e05c52164694d));
        assert_eq!(parse_id("10276657743932975437"), Some(10276657743932975437));
        assert_eq!(hex_id(0x8e9e05c52164694d), "8e9e05c52164694d");
    }
}
