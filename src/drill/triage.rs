//! The triage fire drill: break scenarios that `medic status` must find, acted out in the
//! node's host view (`drill/node/host.rs`): the probes run unchanged and see a node whose clock
//! drifts, whose disk is full, whose sysctl or kernel module is missing, or whose container
//! runtime stopped.

use super::error::{setup, DrillError};
use super::node::host::view_dir;
use super::scenarios::Scenario;
use super::state::Drill;

/// How far `clock-drift` sets the node's clock off (critical: a second or more).
pub(crate) const CLOCK_DRIFT_SECS: f64 = 5.0;
/// The disk usage `disk-full` leaves (critical: 95% or more).
pub(crate) const DISK_FULL_PERCENT: u32 = 97;

/// Acts out a host scenario on node `name`; `None` for the scenarios `scenarios.rs` owns.
pub(crate) fn break_host(
    drill: &Drill,
    scenario: Scenario,
    name: &str,
) -> Option<Result<String, DrillError>> {
    let view = view_dir(drill, name);
    let (file, text, done, already): (&str, String, String, &str) = match scenario {
        Scenario::ClockDrift => (
            "clock-offset",
            format!("{CLOCK_DRIFT_SECS}\n"),
            format!("the clock of {name} now runs {CLOCK_DRIFT_SECS} s ahead"),
            "the clock already drifts",
        ),
        Scenario::DiskFull => (
            "disk-use",
            format!("{DISK_FULL_PERCENT}\n"),
            format!("the disks of {name} are {DISK_FULL_PERCENT}% full"),
            "the disks are already full",
        ),
        Scenario::Sysctl => (
            "sysctl/net.ipv4.ip_forward",
            "0\n".into(),
            format!("net.ipv4.ip_forward is 0 on {name}"),
            "net.ipv4.ip_forward is already 0",
        ),
        Scenario::Module => (
            "unloaded-br_netfilter",
            "unloaded\n".into(),
            format!("br_netfilter is not loaded on {name}"),
            "br_netfilter is already unloaded",
        ),
        Scenario::RuntimeDown => (
            "runtime-down",
            "stopped\n".into(),
            format!("containerd is stopped on {name}"),
            "containerd is already stopped",
        ),
        _ => return None,
    };
    let path = view.join(file);
    let current = std::fs::read_to_string(&path).ok();
    if current.as_deref() == Some(text.as_str()) {
        return Some(Err(DrillError::Usage(format!(
            "{already} on {name}; nothing was changed"
        ))));
    }
    let write = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::write(&path, text))
        .map_err(setup("write the node's host view"));
    Some(write.map(|_| done))
}
