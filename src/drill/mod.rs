//! The drill: a disposable local cluster for rehearsals and tests.
//!
//! - [`state`]: `drill.json` and its lock — every node, its packages, kubelet and etcd member,
//!   the processes ([`process`]) and the join secrets;
//! - [`lifecycle`]: `medic drill up|status|down`; [`scenarios`]: `medic drill break|provision`;
//! - [`etcd`], [`kubelet`], [`sshd`]: what runs for the nodes (etcd members, the Node objects
//!   their kubelets post, an sshd per node address with its own host key);
//! - [`node`]: what `systemctl`, `kubeadm`, `apt-get` do on a drill node (the node shims);
//! - [`apiserver`]: the Kubernetes API emulator (`medic drill apiserver`), which the `kube`
//!   action and the stock `kubectl` use as a cluster, started with a [`seed`].
//!
//! Dependencies run one way: `error` ← `process` ← `state` ← `etcd` ← `kubelet` ← `seed`,
//! `node`, `scenarios`, `lifecycle` (which also uses `seed`, `sshd` and `node`); the API
//! emulator stands alone.

pub(crate) mod apiserver;
mod certs;
mod error;
mod etcd;
mod etcd_alarm;
mod kubelet;
mod lifecycle;
pub(crate) mod node;
mod process;
mod quorum;
mod scenarios;
mod seed;
mod sshd;
mod state;
mod system_pods;
mod triage;

pub(crate) use seed::read_seed;

/// The drill's commands and their types under the path the CLI uses. `Scenario` stays public:
/// it is a value of the CLI's public argument types.
pub mod cluster {
    pub(crate) use crate::drill::error::DrillError;
    pub(crate) use crate::drill::lifecycle::{down, status, up, Layout, UpOptions};
    pub(crate) use crate::drill::quorum::snapshot;
    pub use crate::drill::scenarios::Scenario;
    pub(crate) use crate::drill::scenarios::{break_node, provision};
    pub(crate) use crate::drill::state::DEFAULT_VERSION;
}
