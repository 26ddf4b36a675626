//! The triage fire drill: break scenarios that `medic status` must find, acted out in the
//! node's host view (`drill/node/host.rs`): the probes run unchanged and see a node whose clock
//! drifts, whose disk is full, whose sysctl or kernel module is missing, or whose container
//! runtime stopped.

use super::error::{setup, DrillError};
use super::node::host::view_dir;
use super::state::Drill;

/// How far `clock-drift` sets the node's clock off (critical: a second or more).
pub(crate) const CLOCK_DRIFT_SECS: f64 = 5.0;
/// The disk usage `disk-full` leaves (critical: 95% or more).
pub(crate) const DISK_FULL_PERCENT: u32 = 97;

/// What goes wrong on a node's host (the `medic drill break` scenarios of this file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostFault {
    ClockDrift,
    DiskFull,
    Sysctl,
    Module,
    RuntimeDown,
}

/// Acts out `fault` on node `name`; refused (nothing changed) when it is already so.
pub(crate) fn break_host(
    drill: &Drill,
    fault: HostFault,
    name: &str,
) -> Result<String, DrillError> {
    let view = view_dir(drill, name);
    let (file, text, done, already): (&str, String, String, &str) = match fault {
        HostFault::ClockDrift => (
            "clock-offset",
            format!("{CLOCK_DRIFT_SECS}\n"),
            format!("the clock of {name} now runs {CLOCK_DRIFT_SECS} s ahead"),
            "the clock already drifts",
        ),
        HostFault::DiskFull => (
            "disk-use",
            format!("{DISK_FULL_PERCENT}\n"),
            format!("the disks of {name} are {DISK_FULL_PERCENT}% full"),
            "the disks are already full",
        ),
        HostFault::Sysctl => (
            "sysctl/net.ipv4.ip_forward",
            "0\n".into(),
            format!("net.ipv4.ip_forward is 0 on {name}"),
            "net.ipv4.ip_forward is already 0",
        ),
        HostFault::Module => (
            "unloaded-br_netfilter",
            "unloaded\n".into(),
            format!("br_netfilter is not loaded on {name}"),
            "br_netfilter is already unloaded",
        ),
        HostFault::RuntimeDown => (
            "runtime-down",
            "stopped\n".into(),
            format!("containerd is stopped on {name}"),
            "containerd is already stopped",
        ),
    };
    let path = view.join(file);
    let current = std::fs::read_to_string(&path).ok();
    if current.as_deref() == Some(text.as_str()) {
        return Err(DrillError::Usage(format!(
            "{already} on {name}; nothing was changed"
        )));
    }
    let write = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::write(&path, text))
        .map_err(setup("write the node's host view"));
    write.map(|_| done)
}
