//! What goes wrong in a rehearsal: `medic drill break SCENARIO NODE` (one node's etcd member,
//! kubelet, machine or next package upgrade) and `medic drill provision NODE` (a fresh machine
//! for a lost node).

use std::path::Path;

use super::error::{setup, DrillError};
use super::kubelet::set_kubelet;
use super::state::{package_version, write_file, Drill, DrillLock, PACKAGES};

/// `medic drill break SCENARIO NODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Kill the node's etcd member.
    EtcdDown,
    /// Stop the node's kubelet: the node turns NotReady.
    KubeletDown,
    /// All of it: etcd killed, node NotReady, and SSH to it refused.
    NodeLost,
    /// The next package upgrade on the node fails.
    UpgradeFails,
    /// Every other etcd member killed and its data dir wiped: the node's member survives
    /// alone, without quorum (rehearses `etcd-restore-snapshot`; `medic drill snapshot` first).
    QuorumLost,
    /// The node's clock runs 5 s ahead (`medic status`: node/clock-offset-critical).
    ClockDrift,
    /// The node's disks are 97% full (node/disk-critical).
    DiskFull,
    /// net.ipv4.ip_forward is 0 on the node (node/sysctl-ip-forward).
    Sysctl,
    /// br_netfilter is not loaded on the node (node/kernel-modules).
    Module,
    /// The node's container runtime (containerd) is stopped (node/runtime-active).
    RuntimeDown,
    /// A NOSPACE alarm raised for real: the node's etcd member restarted with a tiny quota and
    /// written to until it refuses, then restarted with its usual quota (etcd/alarms).
    EtcdAlarm,
    /// An API server certificate that expires in 2 days, issued with openssl into the node's
    /// /etc/kubernetes/pki (node/cert-expiring).
    CertExpiring,
    /// A client certificate signed by the node's CA with `openssl ca` and dates in the past
    /// (expired), in the node's /etc/kubernetes/pki (node/cert-expired).
    CertExpired,
}

pub(crate) async fn break_node(
    dir: &Path,
    scenario: Scenario,
    name: &str,
) -> Result<String, DrillError> {
    if scenario == Scenario::QuorumLost {
        return super::quorum::break_quorum(dir, name).await;
    }
    if scenario == Scenario::EtcdAlarm {
        return super::etcd_alarm::raise_nospace(dir, name).await;
    }
    let _lock = DrillLock::acquire_async(dir).await?;
    let mut drill = Drill::load(dir)?;
    let node = drill.node(name)?.clone();
    if node.lost {
        return Err(DrillError::Usage(format!(
            "node {name} is already lost; `medic drill provision {name}` brings a fresh machine back"
        )));
    }
    if let Some(done) = act_out_in_files(scenario, &drill, name) {
        return done;
    }
    // Breaking what is already broken changes nothing and is refused (exit 2), so a typo'd
    // node or a repeated command does not pass for a fresh failure.
    let already = match scenario {
        Scenario::EtcdDown if node.control_plane && node.joined => {
            (!node.etcd.is_some_and(|p| p.alive()))
                .then(|| format!("the etcd member of {name} is already down"))
        }
        Scenario::KubeletDown => {
            (!node.kubelet).then(|| format!("the kubelet on {name} is already stopped"))
        }
        Scenario::UpgradeFails => node
            .upgrade_fails
            .then(|| format!("the next package upgrade on {name} already fails")),
        _ => None,
    };
    if let Some(already) = already {
        return Err(DrillError::Usage(format!(
            "{already}; nothing was changed (`medic drill status` shows every node; `medic drill provision {name}` after `medic drill break node-lost {name}` gives it a fresh machine)"
        )));
    }
    match scenario {
        Scenario::EtcdDown => {
            if !node.etcd.is_some_and(|p| p.alive()) {
                return Err(DrillError::Usage(format!(
                    "node {name} runs no etcd member; etcd runs on {}",
                    drill
                        .nodes
                        .iter()
                        .filter(|n| n.etcd.is_some_and(|p| p.alive()))
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            drill.stop_etcd_async(name).await?;
            drill.save()?;
            Ok(format!("killed the etcd member of {name}"))
        }
        Scenario::KubeletDown => {
            set_kubelet(&mut drill, name, false).await?;
            drill.save()?;
            Ok(format!(
                "stopped the kubelet on {name}; the node is NotReady"
            ))
        }
        Scenario::NodeLost => {
            if drill.nodes.iter().filter(|n| !n.lost).count() < 2 {
                return Err(DrillError::Usage(
                    "every other node is already lost; the drill keeps one reachable".into(),
                ));
            }
            drill.stop_etcd_async(name).await?;
            set_kubelet(&mut drill, name, false).await?;
            drill.node_mut(name)?.lost = true;
            // The address stops listening below; this file makes the node shell refuse new
            // sessions on connections that were already open.
            std::fs::create_dir_all(drill.node_dir(name))
                .map_err(setup("create the node directory"))?;
            write_file(
                &drill.node_dir(name).join("lost"),
                "lost by `medic drill break node-lost`\n",
                0o600,
            )?;
            drill.save()?;
            drill.reload_sshd_async().await?;
            Ok(format!(
                "{name} is lost: etcd member killed, node NotReady, SSH to {} refused",
                node.address
            ))
        }
        Scenario::UpgradeFails => {
            drill.node_mut(name)?.upgrade_fails = true;
            drill.save()?;
            Ok(format!("the next package upgrade on {name} will fail"))
        }
        Scenario::QuorumLost | Scenario::EtcdAlarm => unreachable!("handled above"),
        _ => unreachable!("host scenarios are acted out by drill/triage.rs above"),
    }
}

/// `medic drill provision NODE`: a fresh machine at the node's address (reachable, packages at
/// the cluster's version, not joined, no etcd data), as an operator gets a replacement.
pub(crate) fn provision(dir: &Path, name: &str) -> Result<String, DrillError> {
    let _lock = DrillLock::acquire(dir)?;
    let mut drill = Drill::load(dir)?;
    // Provisioning wipes the machine (its etcd member, kubelet, packages): only for a node
    // that is lost, never a healthy one by mistake.
    if !drill.node(name)?.lost {
        return Err(DrillError::Usage(format!(
            "{name} is not lost; `medic drill break node-lost {name}` first (provision gives a lost node a fresh machine); nothing was changed"
        )));
    }
    drill.stop_etcd(name)?;
    let _ = std::fs::remove_dir_all(drill.node_dir(name));
    let pkg = package_version(&drill.cluster_version);
    let was_lost = {
        let n = drill.node_mut(name)?;
        let was_lost = n.lost;
        n.lost = false;
        n.joined = false;
        n.kubelet = false;
        n.kubelet_version = None;
        n.upgrade_fails = false;
        n.packages = PACKAGES
            .iter()
            .map(|p| (p.to_string(), pkg.clone()))
            .collect();
        n.held = PACKAGES.iter().map(|p| p.to_string()).collect();
        was_lost
    };
    drill.save()?;
    // A reinstalled machine has a new SSH host key: the drill's known_hosts keeps the old one.
    let fingerprint = drill.new_host_key(name)?;
    if was_lost {
        drill.reload_sshd()?;
    }
    Ok(format!(
        "{name} is a fresh machine: reachable over SSH, kubeadm/kubelet/kubectl {pkg} installed, not joined to the cluster\n\
         new SSH host key: {fingerprint}\n\
         (as after a reinstall, known_hosts still has the old key: pass this fingerprint as replacement_host_key)"
    ))
}

/// The scenarios acted out in the node's own files (its host view, its pki), not on its
/// processes.
fn act_out_in_files(
    scenario: Scenario,
    drill: &Drill,
    name: &str,
) -> Option<Result<String, DrillError>> {
    match scenario {
        Scenario::CertExpiring => Some(super::certs::issue_expiring(drill, name)),
        Scenario::CertExpired => Some(super::certs::issue_expired(drill, name)),
        _ => host_fault(scenario).map(|fault| super::triage::break_host(drill, fault, name)),
    }
}

/// The scenarios acted out on a node's host view (`triage.rs`).
fn host_fault(scenario: Scenario) -> Option<super::triage::HostFault> {
    use super::triage::HostFault;
    match scenario {
        Scenario::ClockDrift => Some(HostFault::ClockDrift),
        Scenario::DiskFull => Some(HostFault::DiskFull),
        Scenario::Sysctl => Some(HostFault::Sysctl),
        Scenario::Module => Some(HostFault::Module),
        Scenario::RuntimeDown => Some(HostFault::RuntimeDown),
        _ => None,
    }
}
