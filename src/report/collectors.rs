//! What `medic report` collects, declared as data: one line per collector (group, source,
//! command or object, path in the bundle). `--only GROUP` filters this table; a new collector
//! is one more line.
//!
//! Node commands are fixed text: the only values put into them are the time window, rendered
//! by medic as `@SECONDS` (digits), so nothing from the outside becomes shell syntax. No
//! command reads a private key (`*.key`, `/etc/kubernetes/pki/*.key`); a unit test holds that.

use serde::Serialize;

/// The groups `--only` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Group {
    /// Per node over SSH: logs, kernel, processes, disks, network, certificates, packages.
    System,
    /// From the Kubernetes API: nodes, kube-system pods and logs, events, PDBs.
    Kubernetes,
    /// From etcd: members, status, health, alarms.
    Etcd,
    /// From medic: operations, their plans, history and logs, the inventory, status.
    Medic,
}

/// An object read from the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApiObject {
    Nodes,
    KubeSystemPods,
    Events,
    PodDisruptionBudgets,
    KubeSystemLogs,
}

/// A query of etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EtcdQuery {
    Members,
    Status,
    Health,
    Alarms,
}

/// What medic itself knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MedicItem {
    /// The operations included, as `medic operations -o json` lists them.
    Operations,
    /// Per operation: `plan export` JSON and Markdown, history, phase logs.
    PlanJson,
    PlanMarkdown,
    History,
    Logs,
    Inventory,
    Status,
}

/// Where a collector reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A shell command on each node (`{window}`: journalctl's `--since/--until`).
    Node(&'static str),
    Api(ApiObject),
    Etcd(EtcdQuery),
    Medic(MedicItem),
}

impl Source {
    /// `node`, `api`, `etcd` or `medic`, as the manifest names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Source::Node(_) => "node",
            Source::Api(_) => "api",
            Source::Etcd(_) => "etcd",
            Source::Medic(_) => "medic",
        }
    }
}

/// One collector: `path` is relative to the node's directory (`nodes/NAME/`), or to the
/// bundle (`{op}` is the operation ID for per-operation items).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Collector {
    pub(crate) group: Group,
    pub(crate) source: Source,
    pub(crate) path: &'static str,
}

const fn c(group: Group, source: Source, path: &'static str) -> Collector {
    Collector {
        group,
        source,
        path,
    }
}

use ApiObject as A;
use EtcdQuery as E;
use Group::{Etcd as GE, Kubernetes as GK, Medic as GM, System as GS};
use MedicItem as M;
use Source::{Api, Etcd, Medic, Node};

/// Every collector, in the order they run.
#[rustfmt::skip]
pub(crate) const COLLECTORS: &[Collector] = &[
    c(GS, Node("journalctl -u kubelet --no-pager -o short-iso {window}"), "journal-kubelet.log"),
    c(GS, Node("journalctl -u containerd -u crio -u docker --no-pager -o short-iso {window}"), "journal-runtime.log"),
    c(GS, Node("journalctl -u etcd --no-pager -o short-iso {window}"), "journal-etcd.log"),
    c(GS, Node("dmesg -T"), "dmesg.txt"),
    c(GS, Node("systemctl --failed --no-pager"), "systemctl-failed.txt"),
    c(GS, Node("ps auxww"), "ps.txt"),
    c(GS, Node("df -hT"), "df.txt"),
    c(GS, Node("df -i"), "df-inodes.txt"),
    c(GS, Node("free -m"), "free.txt"),
    c(GS, Node("lsmod"), "lsmod.txt"),
    c(GS, Node("sysctl net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.conf.all.rp_filter vm.swappiness vm.overcommit_memory kernel.panic fs.inotify.max_user_watches fs.inotify.max_user_instances fs.file-max kernel.pid_max"), "sysctl.txt"),
    c(GS, Node("ip addr"), "ip-addr.txt"),
    c(GS, Node("ip route"), "ip-route.txt"),
    c(GS, Node("ip link"), "ip-link.txt"),
    c(GS, Node("iptables-save"), "iptables-save.txt"),
    c(GS, Node("timedatectl"), "timedatectl.txt"),
    c(GS, Node("for f in /etc/kubernetes/manifests/*.yaml; do [ -f \"$f\" ] || continue; echo \"# $f\"; cat \"$f\"; done"), "manifests.yaml"),
    c(GS, Node("for f in /etc/kubernetes/pki/*.crt /etc/kubernetes/pki/etcd/*.crt /var/lib/kubelet/pki/*.crt; do [ -f \"$f\" ] || continue; echo \"# $f\"; openssl x509 -noout -subject -issuer -enddate -in \"$f\"; done"), "certificates.txt"),
    c(GS, Node("dpkg-query -W -f '${Package} ${Version}\\n' kubeadm kubelet kubectl 2>/dev/null || rpm -q kubeadm kubelet kubectl"), "packages.txt"),
    c(GK, Api(A::Nodes), "api/nodes.json"),
    c(GK, Api(A::KubeSystemPods), "api/pods-kube-system.json"),
    c(GK, Api(A::Events), "api/events.json"),
    c(GK, Api(A::PodDisruptionBudgets), "api/poddisruptionbudgets.json"),
    c(GK, Api(A::KubeSystemLogs), "api/logs"),
    c(GE, Etcd(E::Members), "etcd/members.json"),
    c(GE, Etcd(E::Status), "etcd/status.json"),
    c(GE, Etcd(E::Health), "etcd/health.json"),
    c(GE, Etcd(E::Alarms), "etcd/alarms.json"),
    c(GM, Medic(M::Operations), "medic/operations.json"),
    c(GM, Medic(M::PlanJson), "medic/operations/{op}/plan.json"),
    c(GM, Medic(M::PlanMarkdown), "medic/operations/{op}/plan.md"),
    c(GM, Medic(M::History), "medic/operations/{op}/history.json"),
    c(GM, Medic(M::Logs), "medic/operations/{op}/logs.json"),
    c(GM, Medic(M::Inventory), "medic/inventory.yaml"),
    c(GM, Medic(M::Status), "medic/status.json"),
];

/// The collectors of the groups in `only` (all when empty).
pub(crate) fn selected(only: &[Group]) -> impl Iterator<Item = &'static Collector> + '_ {
    COLLECTORS
        .iter()
        .filter(move |c| only.is_empty() || only.contains(&c.group))
}

/// A node command with its time window: `--since @START [--until @END]` for journalctl.
pub(crate) fn node_command(template: &str, since: Option<u64>, until: Option<u64>) -> String {
    let mut window = String::new();
    if let Some(s) = since {
        window.push_str(&format!("--since @{s}"));
    }
    if let Some(u) = until {
        window.push_str(&format!(" --until @{u}"));
    }
    template.replace("{window}", window.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_collector_reads_a_private_key() {
        for c in COLLECTORS {
            if let Source::Node(cmd) = c.source {
                for bad in [".key", "private", ".pem", "id_rsa", "id_ed25519"] {
                    assert!(!cmd.contains(bad), "{cmd} reads {bad}");
                }
            }
        }
    }

    #[test]
    fn the_window_is_digits_only() {
        let cmd = node_command(COLLECTORS[0].source_text(), Some(10), Some(20));
        assert!(cmd.ends_with("--since @10 --until @20"), "{cmd}");
        let cmd = node_command("x {window}", None, None);
        assert_eq!(cmd, "x ");
    }

    #[test]
    fn every_group_has_collectors_and_paths_are_unique() {
        for g in [Group::System, Group::Kubernetes, Group::Etcd, Group::Medic] {
            assert!(selected(&[g]).count() > 0);
        }
        let mut paths: Vec<_> = COLLECTORS.iter().map(|c| c.path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), COLLECTORS.len());
    }

    impl Collector {
        fn source_text(&self) -> &'static str {
            match self.source {
                Source::Node(c) => c,
                _ => "",
            }
        }
    }
}
