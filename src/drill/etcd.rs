//! The drill's etcd members: one real etcd process per joined control-plane node (kubeadm's
//! static pod), started detached, and the client calls the drill makes to them.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, MemberAddResponse};

use super::error::{setup, DrillError, EtcdError, Failure};
use super::process::{spawn_detached, Proc};
use super::state::Drill;

impl Drill {
    /// Starts `node`'s etcd member in its own session (it outlives the command that started
    /// it, e.g. a `kubeadm join` over SSH); its output goes to `nodes/NODE/etcd.log`.
    pub(crate) fn start_etcd(
        &mut self,
        name: &str,
        initial_cluster: &str,
        state: &str,
    ) -> Result<(), DrillError> {
        self.start_etcd_with(name, initial_cluster, state, &[])
    }

    /// [`Drill::start_etcd`] with `extra` flags (the `etcd-alarm` break's small quota).
    pub(crate) fn start_etcd_with(
        &mut self,
        name: &str,
        initial_cluster: &str,
        state: &str,
        extra: &[&str],
    ) -> Result<(), DrillError> {
        let node = self.node(name)?.clone();
        let data = self.etcd_data_dir(name);
        std::fs::create_dir_all(self.node_dir(name)).map_err(setup("create the node directory"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node_dir(name).join("etcd.log"))
            .map_err(setup("open the etcd log"))?;
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-peer-urls")
            .arg(self.peer_url(&node))
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url(&node))
            .arg("--listen-client-urls")
            .arg(self.client_url(&node))
            .arg("--advertise-client-urls")
            .arg(self.client_url(&node))
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(format!("drill-{}", self.ssh_port))
            .args([
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
                "--log-level",
                "warn",
            ])
            .args(extra);
        let pid = spawn_detached(&mut cmd, log).map_err(|source| Failure::Start {
            what: "start etcd (install etcd-server)",
            source,
        })?;
        self.node_mut(name)?.etcd = Some(Proc::of(pid)?);
        Ok(())
    }

    /// Kills `name`'s etcd member (blocking: for the drill's synchronous commands).
    pub(super) fn stop_etcd(&mut self, name: &str) -> Result<(), DrillError> {
        if let Some(p) = self.node_mut(name)?.etcd.take() {
            p.kill();
        }
        Ok(())
    }

    /// [`Drill::stop_etcd`] for async code.
    pub(super) async fn stop_etcd_async(&mut self, name: &str) -> Result<(), DrillError> {
        if let Some(p) = self.node_mut(name)?.etcd.take() {
            p.kill_async().await;
        }
        Ok(())
    }
}

/// A client on the first of `endpoints` that answers.
pub(super) async fn etcd_client(endpoints: &[String]) -> Result<EtcdClient, EtcdError> {
    if endpoints.is_empty() {
        return Err(EtcdError::NoMember);
    }
    crate::etcd::Transport::any_client(&crate::inventory::EtcdSettings {
        endpoints: endpoints.to_vec(),
        ..Default::default()
    })
    .await
    .map_err(EtcdError::Connect)
}

/// Waits until every endpoint answers and the cluster has a leader.
pub(super) async fn wait_etcd_healthy(
    endpoints: &[String],
    timeout: Duration,
) -> Result<(), EtcdError> {
    let started = Instant::now();
    loop {
        let mut last = String::new();
        let mut healthy = 0;
        for e in endpoints {
            match etcd_client(std::slice::from_ref(e)).await {
                Ok(mut c) => match c.status().await {
                    Ok(s) if s.leader() != 0 => healthy += 1,
                    Ok(_) => last = format!("{e}: no leader yet"),
                    Err(err) => last = format!("{e}: {err}"),
                },
                Err(err) => last = err.to_string(),
            }
        }
        if healthy == endpoints.len() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(EtcdError::Unhealthy {
                secs: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each member's state by name: `healthy`, `healthy, leader`, `unhealthy`, `learner`.
pub(super) async fn etcd_members(drill: &Drill) -> Result<BTreeMap<String, String>, EtcdError> {
    let mut client = etcd_client(&drill.live_etcd_endpoints(None)).await?;
    let list = client
        .member_list()
        .await
        .map_err(|source| EtcdError::MemberList { source })?;
    let mut out = BTreeMap::new();
    for m in list.members() {
        let name = if m.name().is_empty() {
            format!("(unstarted {})", m.peer_urls().join(","))
        } else {
            m.name().to_string()
        };
        let mut state = "unhealthy".to_string();
        if let Some(url) = m.client_urls().first() {
            if let Ok(mut c) = etcd_client(std::slice::from_ref(url)).await {
                if let Ok(s) = c.status().await {
                    state = if s.leader() == m.id() {
                        "healthy, leader".into()
                    } else {
                        "healthy".into()
                    };
                }
            }
        }
        if m.is_learner() {
            state.push_str(", learner");
        }
        out.insert(name, state);
    }
    Ok(out)
}

/// Adds a member with `peer` to the cluster. As kubeadm does, a refused add is retried for a
/// while: a cluster that just changed membership answers "unhealthy cluster" (etcd 3.4) or
/// "member not found" for a few seconds. A peer URL that is already a member is final.
pub(super) async fn add_member(
    client: &mut EtcdClient,
    peer: &str,
) -> Result<MemberAddResponse, etcd_client::Error> {
    let started = Instant::now();
    loop {
        match client.member_add([peer.to_string()], None).await {
            Ok(added) => return Ok(added),
            Err(e) if !is_peer_exists(&e) && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether etcd refused an add because the peer URL is already a member. etcd tells this
/// refusal (`ErrPeerURLexist`) from its others only by the status message — its own Go client
/// maps messages back to errors the same way (`rpctypes.Error`) — so this is the one place
/// that reads it.
fn is_peer_exists(e: &etcd_client::Error) -> bool {
    e.to_string().contains("already exists")
}
