//! Lost etcd quorum, for rehearsing `etcd-restore-snapshot`:
//!
//! 1. `medic drill snapshot FILE` saves a snapshot of the drill's etcd to FILE on this machine
//!    (written to `FILE.part`, then renamed), before the break;
//! 2. `medic drill break quorum-lost NODE` kills every other etcd member and wipes their data
//!    dirs: NODE's member survives alone, without quorum (two of three members gone for good).

use std::path::Path;

use super::error::{setup, DrillError, Failure};
use super::etcd::etcd_client;
use super::state::{Drill, DrillLock};

/// `medic drill break quorum-lost NODE`: NODE's member is the one that survives.
pub(crate) async fn break_quorum(dir: &Path, survivor: &str) -> Result<String, DrillError> {
    let _lock = DrillLock::acquire_async(dir).await?;
    let mut drill = Drill::load(dir)?;
    let node = drill.node(survivor)?.clone();
    let live: Vec<String> = drill
        .nodes
        .iter()
        .filter(|n| n.etcd.is_some_and(|p| p.alive()))
        .map(|n| n.name.clone())
        .collect();
    if !node.etcd.is_some_and(|p| p.alive()) {
        return Err(DrillError::Usage(format!(
            "the etcd member of {survivor} is not running; name a node whose member survives (running: {}); nothing was changed",
            if live.is_empty() { "none".into() } else { live.join(", ") }
        )));
    }
    let lost: Vec<String> = live.into_iter().filter(|n| n != survivor).collect();
    let members = lost.len() + 1;
    // One survivor of three or more is below any quorum.
    if members < 3 {
        return Err(DrillError::Usage(format!(
            "quorum-lost needs at least three running etcd members (running: {members}); nothing was changed"
        )));
    }
    for name in &lost {
        drill.stop_etcd_async(name).await?;
        let data = drill.etcd_data_dir(name);
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .map_err(setup(format!("wipe the etcd data dir {}", data.display())))?;
        }
    }
    drill.save()?;
    Ok(format!(
        "etcd quorum lost: the members of {} are killed and their data dirs wiped; {survivor} survives alone (1 of {members}, quorum {})",
        lost.join(", "),
        members / 2 + 1
    ))
}

/// `medic drill snapshot FILE`: a snapshot of the drill's etcd, saved on this machine.
pub(crate) async fn snapshot(dir: &Path, file: &Path) -> Result<String, DrillError> {
    let drill = Drill::load(dir)?;
    let tool = |what: &'static str| {
        move |e: etcd_client::Error| {
            DrillError::from(Failure::Tool {
                what,
                stderr: e.to_string(),
            })
        }
    };
    let mut client = etcd_client(&drill.live_etcd_endpoints(None))
        .await
        .map_err(|e| Failure::Tool {
            what: "connect to the drill's etcd",
            stderr: e.to_string(),
        })?;
    let revision = client
        .status()
        .await
        .map_err(tool("read the etcd status"))?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    let mut stream = client
        .snapshot()
        .await
        .map_err(tool("take an etcd snapshot"))?;
    let mut data = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(tool("take an etcd snapshot"))?
    {
        data.extend_from_slice(chunk.blob());
    }
    let partial = file.with_extension("part");
    std::fs::write(&partial, &data).map_err(setup(format!("write {}", partial.display())))?;
    std::fs::rename(&partial, file).map_err(setup(format!("rename {}", partial.display())))?;
    Ok(format!(
        "saved an etcd snapshot of {} bytes at revision {revision} to {}",
        data.len(),
        file.display()
    ))
}
