//! `medic drill break etcd-alarm NODE`: a NOSPACE alarm raised by etcd itself, for
//! `medic status`'s `etcd/alarms` probe:
//!
//! 1. NODE's member is restarted with a backend quota smaller than its database;
//! 2. keys are written through it until it refuses (`etcdserver: mvcc: database space
//!    exceeded`), which is when etcd raises NOSPACE for the whole cluster;
//! 3. the member is restarted with its usual quota, so the alarm stays (etcd keeps it until
//!    disarmed) while compacting, defragmenting and disarming repair the cluster.

use std::path::Path;
use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType};

use super::error::{DrillError, Failure};
use super::etcd::{etcd_client, wait_etcd_healthy};
use super::state::{Drill, DrillLock};

/// The quota NODE's member runs with while the alarm is raised: below any etcd database.
const TINY_QUOTA: &str = "16384";
/// How many writes may go through before the member must refuse (bounded: never loops).
const MAX_WRITES: usize = 64;

/// Raises NOSPACE through node `name`'s member; refused when an alarm is already active.
pub(crate) async fn raise_nospace(dir: &Path, name: &str) -> Result<String, DrillError> {
    let _lock = DrillLock::acquire_async(dir).await?;
    let mut drill = Drill::load(dir)?;
    let node = drill.node(name)?.clone();
    if !node.etcd.is_some_and(|p| p.alive()) {
        return Err(DrillError::Usage(format!(
            "node {name} runs no etcd member; nothing was changed"
        )));
    }
    let endpoint = drill.client_url(&node);
    if !active_alarms(&drill).await?.is_empty() {
        return Err(DrillError::Usage(format!(
            "an etcd alarm is already active; nothing was changed (etcdctl alarm list --endpoints {endpoint})"
        )));
    }
    let own = format!("{name}={}", drill.peer_url(&node));
    restart(
        &mut drill,
        name,
        &own,
        &["--quota-backend-bytes", TINY_QUOTA],
    )
    .await?;
    let mut client = etcd_client(std::slice::from_ref(&endpoint))
        .await
        .map_err(|e| tool("connect to the member with the small quota", e))?;
    let value = "x".repeat(1024);
    let mut refused = None;
    for i in 0..MAX_WRITES {
        if let Err(e) = client
            .put(format!("/medic-drill/fill/{i}"), value.as_str(), None)
            .await
        {
            refused = Some(e);
            break;
        }
    }
    if refused.is_none() {
        return Err(tool(
            "fill the member",
            format!("{MAX_WRITES} writes of 1 KiB went through a {TINY_QUOTA}-byte quota"),
        ));
    }
    restart(&mut drill, name, &own, &[]).await?;
    let alarms = active_alarms(&drill).await?;
    if !alarms.iter().any(|a| a == "NOSPACE") {
        return Err(tool(
            "raise NOSPACE",
            format!("the member refused the write but etcd lists {alarms:?}"),
        ));
    }
    drill.save()?;
    Ok(format!(
        "etcd raised NOSPACE: the member of {name} ran out of its {TINY_QUOTA}-byte quota; it runs with its usual quota again and the alarm stays until disarmed"
    ))
}

/// Stops `name`'s member and starts it again with `extra` flags, until the cluster is healthy.
async fn restart(
    drill: &mut Drill,
    name: &str,
    own: &str,
    extra: &[&str],
) -> Result<(), DrillError> {
    drill.stop_etcd_async(name).await?;
    drill.start_etcd_with(name, own, "existing", extra)?;
    wait_etcd_healthy(&drill.live_etcd_endpoints(None), Duration::from_secs(30))
        .await
        .map_err(|source| {
            Failure::EtcdUnhealthy {
                source,
                log: drill.node_dir(name).join("etcd.log"),
            }
            .into()
        })
}

/// The names (`NOSPACE`, `CORRUPT`) of the cluster's active alarms.
async fn active_alarms(drill: &Drill) -> Result<Vec<String>, DrillError> {
    let mut client = etcd_client(&drill.live_etcd_endpoints(None))
        .await
        .map_err(|e| tool("connect to etcd", e))?;
    let list = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(|e| tool("list the etcd alarms", e))?;
    Ok(list
        .alarms()
        .iter()
        .map(|a| match a.alarm() {
            AlarmType::Nospace => "NOSPACE".to_string(),
            AlarmType::Corrupt => "CORRUPT".to_string(),
            AlarmType::None => "NONE".to_string(),
        })
        .collect())
}

fn tool(what: &'static str, e: impl std::fmt::Display) -> DrillError {
    Failure::Tool {
        what,
        stderr: e.to_string(),
    }
    .into()
}
