//! `systemctl start|stop|restart|is-active etcd` on a drill node: the node's etcd member as a
//! systemd unit (how Kubespray and external-etcd clusters run it), so that a procedure can stop
//! and start a member around a snapshot restore.
//!
//! 1. `stop` kills the member; the data dir stays.
//! 2. `start` starts it on its data dir (`/var/lib/etcd` in the node's shell, the drill's
//!    `nodes/NODE/etcd`). With data, etcd's own membership decides (a restored snapshot is a
//!    one-member cluster). Without data the member joins the running cluster, as the unit's
//!    configuration would say after `etcdctl member add`: `--initial-cluster` lists the
//!    cluster's members and this node, `--initial-cluster-state existing`; a node that was not
//!    added first fails as etcd does. The command returns once the member answers (etcd's unit
//!    is `Type=notify`).

use std::time::{Duration, Instant};

use super::{drill_err, Reply};
use crate::drill::etcd::etcd_client;
use crate::drill::state::Drill;

/// Runs `verb` on the etcd unit of `node`, appending to `out`.
pub(super) async fn etcd_unit(
    drill: &mut Drill,
    node: &str,
    verb: &str,
    quiet: bool,
    out: &mut Reply,
) -> Result<(), Reply> {
    let n = drill.node(node).map_err(drill_err)?.clone();
    if !n.control_plane {
        return Err(Reply::err(
            5,
            format!("Failed to {verb} etcd.service: Unit etcd.service not found.\n"),
        ));
    }
    let running = n.etcd.is_some_and(|p| p.alive());
    match verb {
        "stop" => drill.stop_etcd_async(node).await.map_err(drill_err)?,
        "start" if running => {}
        "start" | "restart" => {
            if running {
                drill.stop_etcd_async(node).await.map_err(drill_err)?;
            }
            start(drill, node).await?;
        }
        "enable" | "disable" | "daemon-reload" => {}
        "is-active" => {
            if !quiet {
                out.stdout
                    .push_str(if running { "active\n" } else { "inactive\n" });
            }
            if !running {
                out.code = 3;
            }
        }
        other => {
            return Err(Reply::err(
                1,
                format!("systemctl: the drill's etcd unit does not implement {other}\n"),
            ))
        }
    }
    Ok(())
}

async fn start(drill: &mut Drill, node: &str) -> Result<(), Reply> {
    let n = drill.node(node).map_err(drill_err)?.clone();
    let peer = drill.peer_url(&n);
    let own = format!("{node}={peer}");
    if drill.etcd_data_dir(node).join("member").exists() {
        drill
            .start_etcd(node, &own, "existing")
            .map_err(drill_err)?;
    } else {
        let initial = join_cluster(drill, node, &peer).await?;
        drill
            .start_etcd(node, &initial, "existing")
            .map_err(drill_err)?;
    }
    wait_answers(&drill.client_url(&n)).await
}

/// `--initial-cluster` for a member joining the running cluster: every member by name, this
/// node among them (added, not started yet).
async fn join_cluster(drill: &Drill, node: &str, peer: &str) -> Result<String, Reply> {
    let failed = |why: String| {
        Reply::err(
            1,
            format!("Job for etcd.service failed: etcd: {why}\nSee \"journalctl -xeu etcd.service\" for details.\n"),
        )
    };
    let mut client = etcd_client(&drill.live_etcd_endpoints(Some(node)))
        .await
        .map_err(|e| failed(format!("no data dir and no cluster to join ({e})")))?;
    let list = client
        .member_list()
        .await
        .map_err(|e| failed(format!("member list: {e}")))?;
    if !list
        .members()
        .iter()
        .any(|m| m.peer_urls().iter().any(|u| u == peer))
    {
        return Err(failed(format!(
            "error validating peerURLs: member {peer} has not been added to the cluster (etcdctl member add first)"
        )));
    }
    Ok(list
        .members()
        .iter()
        .flat_map(|m| {
            let name = if m.peer_urls().iter().any(|u| u == peer) {
                node.to_string()
            } else {
                m.name().to_string()
            };
            m.peer_urls()
                .iter()
                .map(move |u| format!("{name}={u}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join(","))
}

/// Waits (up to 30 s) until the member answers on its client URL.
async fn wait_answers(url: &str) -> Result<(), Reply> {
    let started = Instant::now();
    loop {
        if let Ok(mut c) = etcd_client(&[url.to_string()]).await {
            if c.status().await.is_ok() {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(Reply::err(
                1,
                format!("Job for etcd.service failed: etcd did not answer at {url} within 30s\n"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
