//! The shape of an inventory (`cluster.yaml`), one type per mapping `inventory.rs` reads (same
//! keys; `tests.rs` checks it). Relative paths are relative to the inventory file.

use schemars::JsonSchema;

use super::procedure::OneOrMany;
use super::scalars::{Duration, Flag};

/// The cluster medic works on: nodes, SSH settings, the kubeconfig and etcd access.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Inventory {
    /// The cluster's name.
    pub name: Option<String>,
    /// SSH settings for every node; a node's own `ssh:` overrides them key by key.
    pub ssh: Option<Ssh>,
    /// The nodes.
    pub nodes: Vec<Node>,
    pub kubernetes: Option<Kubernetes>,
    pub etcd: Option<Etcd>,
    pub policy: Option<Policy>,
    /// Webhooks told when a run starts, pauses, fails or completes.
    pub notify: Option<Vec<Notify>>,
}

/// One webhook: medic POSTs a JSON notice (operation, procedure, phase, state, who, text).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Notify {
    /// An http:// or https:// URL (https: the system's CA certificates).
    pub url: String,
    /// Which events (default: all).
    pub events: Option<Vec<NotifyEvent>>,
    /// Per attempt (default 5s, at most 60s).
    pub timeout: Option<Duration>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum NotifyEvent {
    Started,
    Paused,
    Failed,
    Completed,
}

/// Rules for every operation on this cluster.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Policy {
    /// Every operation needs at least one approval (`medic plan approve`) before it executes.
    pub require_approval: Option<super::scalars::Flag>,
    /// A `resume` after a pause longer than this reads the drift facts again (default 30m).
    pub drift_recheck_after: Option<Duration>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Node {
    /// The node's name, as Kubernetes knows it.
    pub name: String,
    /// Host name or IP address for SSH (default: the name).
    pub address: Option<String>,
    /// Roles such as `control-plane`, `etcd`, `worker`; `ssh: {on: {role: NAME}}` selects by them.
    pub roles: Option<OneOrMany>,
    pub ssh: Option<Ssh>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ssh {
    /// The login name.
    pub user: Option<String>,
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// A private key file; it must exist.
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    /// `[user@]host[:port]`, as `ssh -J` takes it.
    pub jump_host: Option<String>,
    /// Run commands through sudo.
    pub sudo: Option<Flag>,
    /// `strict` (the default) or `accept-new`; checking cannot be turned off.
    pub host_key_checking: Option<HostKeyChecking>,
    pub connect_timeout: Option<Duration>,
    /// How long a master connection outlives the medic run that opened it, for the next run to
    /// reuse (default 60s, at most 1h); 0 closes it when medic exits. `medic ssh close` ends them.
    pub persist: Option<Duration>,
}

#[derive(JsonSchema)]
pub enum HostKeyChecking {
    #[schemars(rename = "strict")]
    Strict,
    #[schemars(rename = "accept-new")]
    AcceptNew,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Kubernetes {
    /// The kubeconfig kube phases use (default: KUBECONFIG, then ~/.kube/config).
    pub kubeconfig: Option<String>,
    /// The kubeconfig context.
    pub context: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Etcd {
    /// Client URLs such as https://10.0.0.1:2379.
    pub endpoints: Option<OneOrMany>,
    /// CA certificate file.
    pub ca: Option<String>,
    /// Client certificate file.
    pub cert: Option<String>,
    /// Client key file.
    pub key: Option<String>,
    /// `direct` (default) or `ssh` (etcdctl on the node `via`).
    pub transport: Option<super::procedure::EtcdTransport>,
    /// The node to run etcdctl on for the ssh transport; one of `nodes`.
    pub via: Option<String>,
}
