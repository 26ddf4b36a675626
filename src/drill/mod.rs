//! The drill: a disposable local cluster for rehearsals and tests.
//!
//! - [`state`]: `drill.json` and its lock — every node, its packages, kubelet and etcd member,
//!   the processes ([`process`]) and the join secrets;
//! - [`lifecycle`]: `medic drill up|status|down`; [`scenarios`]: `medic drill break|provision`;
//! - [`etcd`], [`kubelet`], [`sshd`]: what runs for the nodes (etcd members, the Node objects
//!   their kubelets post, the one sshd serving every node address);
//! - [`node`]: what `systemctl`, `kubeadm`, `apt-get` do on a drill node (the node shims);
//! - [`apiserver`]: the Kubernetes API emulator (`medic drill apiserver`), which the `kube`
//!   action and the stock `kubectl` use as a cluster, started with a [`seed`].
//!
//! Dependencies run one way: `error` ← `process` ← `state` ← `etcd`, `sshd` ← `kubelet` ←
//! `node`, `scenarios`, `lifecycle`; the API emulator stands alone.

pub mod apiserver;
mod error;
mod etcd;
mod kubelet;
mod lifecycle;
pub mod node;
mod process;
mod scenarios;
mod seed;
mod sshd;
mod state;

pub use seed::read_seed;

/// The drill's commands and their types under the path the CLI uses.
pub mod cluster {
    pub use super::error::DrillError;
    pub use super::lifecycle::{down, status, up, Layout, NodeStatus, Status, UpOptions};
    pub use super::scenarios::{break_node, provision, Scenario};
    pub use super::state::{Drill, DrillNode, DEFAULT_VERSION};
}
