//! The drill's errors: a usage error (bad input, a drill in the wrong state: exit 2) or a failed
//! step (exit 1), and the errors of the etcd and Kubernetes API calls the drill makes for its
//! nodes. Each variant is named after the step that failed; the messages read as the operator
//! sees them.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DrillError {
    /// Bad input or a drill in the wrong state (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something the drill runs failed (exit 1).
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// The step of a drill command that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("open {}/drill.lock: {source}", dir.display())]
    OpenLock { dir: PathBuf, source: io::Error },
    #[error("lock the drill: {source}")]
    Lock { source: io::Error },
    #[error("read {}: {source}", path.display())]
    ReadState { path: PathBuf, source: io::Error },
    #[error("{} is damaged: {source}", path.display())]
    DamagedState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("write {}: {source}", path.display())]
    WriteFile { path: PathBuf, source: io::Error },
    /// Preparing what the drill's processes need: directories, logs, keys, ports, randomness.
    #[error("{step}: {source}")]
    Setup { step: String, source: io::Error },
    /// Starting a process (etcd, sshd, the API emulator, ssh-keygen): `what` says what to install.
    #[error("{what}: {source}")]
    Start {
        what: &'static str,
        source: io::Error,
    },
    #[error("process {pid} exited right after start")]
    ExitedAtStart { pid: u32 },
    #[error("{what}: {stderr}")]
    Tool { what: &'static str, stderr: String },
    #[error("could not find a free port on the drill's addresses")]
    NoFreePort,
    #[error("{source}; see {}", log.display())]
    EtcdUnhealthy { source: EtcdError, log: PathBuf },
    #[error("the API emulator did not start: {output}")]
    ApiEmulatorDidNotStart { output: String },
    #[error("sshd does not accept connections on {address}:{port}; see {}", log.display())]
    SshdNotAccepting {
        address: String,
        port: u16,
        log: PathBuf,
    },
    #[error("{what} (pid {pid}) did not stop")]
    DidNotStop { what: String, pid: u32 },
    #[error("port {port} is still in use on a drill address after stopping")]
    PortInUse { port: u16 },
    #[error("kubelet on {node}: {source}")]
    Kubelet { node: String, source: NodeApiError },
}

/// A preparation step that failed (the step reads after "failed to").
pub(super) fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> DrillError {
    let step = step.into();
    move |source| Failure::Setup { step, source }.into()
}

/// What the drill's calls to its etcd members fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EtcdError {
    #[error("no etcd member is running")]
    NoMember,
    /// No endpoint answered (the transport's own account of each).
    #[error("{0}")]
    Connect(String),
    #[error("etcd did not become healthy within {secs}s ({last})")]
    Unhealthy { secs: u64, last: String },
    #[error("{source}")]
    MemberList { source: etcd_client::Error },
}

/// What a node's kubelet fails with when it talks to the API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeApiError {
    /// No client for the drill's kubeconfig.
    #[error("{0}")]
    Client(String),
    #[error("{source}")]
    ListNodes { source: kube::Error },
    #[error("get node {name}: {source}")]
    GetNode { name: String, source: kube::Error },
    #[error("update node {name}: {source}")]
    UpdateNode { name: String, source: kube::Error },
    #[error("register node {name}: {source}")]
    RegisterNode { name: String, source: kube::Error },
    #[error("{source}")]
    Decode { source: serde_json::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_the_operator_saw_them_before_they_were_typed() {
        let io = || io::Error::new(io::ErrorKind::NotFound, "No such file or directory");
        let cases: Vec<(DrillError, &str)> = vec![
            (
                Failure::Start { what: "start etcd (install etcd-server)", source: io() }.into(),
                "start etcd (install etcd-server): No such file or directory",
            ),
            (
                setup("create the node directory")(io()),
                "create the node directory: No such file or directory",
            ),
            (
                Failure::EtcdUnhealthy {
                    source: EtcdError::Unhealthy { secs: 60, last: "no leader yet".into() },
                    log: "/d/nodes/cp-1/etcd.log".into(),
                }
                .into(),
                "etcd did not become healthy within 60s (no leader yet); see /d/nodes/cp-1/etcd.log",
            ),
            (
                Failure::Kubelet {
                    node: "cp-1".into(),
                    source: NodeApiError::Client("no kubeconfig".into()),
                }
                .into(),
                "kubelet on cp-1: no kubeconfig",
            ),
            (
                Failure::DidNotStop { what: "sshd".into(), pid: 7 }.into(),
                "sshd (pid 7) did not stop",
            ),
        ];
        for (e, text) in cases {
            assert!(matches!(e, DrillError::Failed(_)));
            assert_eq!(e.to_string(), text);
        }
    }
}
