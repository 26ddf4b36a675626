//! SSH connections to cluster nodes: master connections made by the system `ssh` client,
//! commands run over them through the `openssh` crate (native multiplexing).
//!
//! 1. One master connection per node, opened on first use and shared by every phase; commands
//!    run as new channels over it, so a second phase costs no handshake.
//! 2. The system `ssh` client makes the connection, so `~/.ssh/config` (`Host` aliases, agents,
//!    `ProxyJump`) works as operators expect; its options are built in one place (`options`).
//! 3. Host keys are checked strictly against the inventory's (or the user's) known_hosts;
//!    `accept-new` only when the inventory says so; never off. An identity file comes with
//!    `IdentitiesOnly=yes`.
//! 4. A master outlives the medic process for `ssh.persist` (default 60 s) of idleness, and the
//!    next medic run reuses it: its socket is named after a hash of everything that decides
//!    where and how the node is reached and trusted, lives in a private directory (`control`),
//!    and is trusted only if ours, closed to others, and answering. `medic ssh close` ends them.
//! 5. With `ssh.persist: 0` a process keeps its masters under its own directory and closes them
//!    on exit; a new pool closes the masters of medic processes that died (SIGKILL), and such a
//!    master exits by itself after a short idle time anyway.
//! 6. A reused master never checks the host key again, but it cannot outlive its host: a
//!    rebooted or reinstalled machine drops the TCP connection, the master ends (keepalives
//!    every 5 s), and the next connection checks the new key. A change to the known-hosts files
//!    changes the socket name, so it is checked at once too.

mod control;
mod options;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssh::Session;
use tokio::sync::OnceCell;

use crate::inventory::NodeEntry;

pub(crate) use control::MasterNote;
pub(crate) use options::{medic_file, use_medic_known_hosts, MEDIC_KNOWN_HOSTS};

/// How long an unused per-process master stays up after its medic was killed.
const ORPHAN_IDLE_SECS: u64 = 15;
/// `ssh.persist` when the inventory does not say.
pub(crate) const DEFAULT_PERSIST_SECS: u16 = 60;
/// How long a kept master may take to answer before it counts as dead.
const CHECK_SECS: u64 = 2;

type Slot = Arc<OnceCell<Result<Arc<Session>, SshError>>>;

/// Why a node's master connection could not be made, named after the failed step. The error
/// is cached with the node's slot (every phase waiting on it gets the same answer), so its
/// sources are shared (`Arc`).
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// The address would read as an option to `ssh` (or is not a host at all).
    #[error("node {node}: address {reason}")]
    Address { node: String, reason: String },
    #[error("create ssh control directory {}: {source}; remove it (or set XDG_RUNTIME_DIR to a private directory)", .dir.display())]
    ControlDir {
        dir: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("lock ssh control socket {}: {source}", .path.display())]
    Lock {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("start ssh for node {node}: {source}")]
    Spawn {
        node: String,
        source: Arc<std::io::Error>,
    },
    #[error("connect to {destination}: no answer within {secs:.0}s")]
    ConnectTimeout { destination: String, secs: f64 },
    #[error("the host key of node {node} ({destination}) has CHANGED since it was recorded in {known_hosts}; this happens when a host is reinstalled, or when someone intercepts the connection. Verify the new key out of band, then replace the old entry (ssh-keygen -R) and retry")]
    HostKeyChanged {
        node: String,
        destination: String,
        known_hosts: String,
    },
    #[error("node {node} ({destination}) is not in {known_hosts} and host key checking is strict; verify its key and add it (ssh-keyscan), or set `ssh: {{host_key_checking: accept-new}}` in the inventory to trust it on first contact")]
    HostKeyUnknown {
        node: String,
        destination: String,
        known_hosts: String,
    },
    #[error("connect to node {node} ({destination}): Too many authentication failures: the server allows only a few keys (MaxAuthTries, 6 by default) and ssh offered others before the right one. {fix}")]
    TooManyAuthFailures {
        node: String,
        destination: String,
        fix: &'static str,
    },
    /// Any other failure of the handshake; `last` is the last line ssh printed.
    #[error("connect to node {node} ({destination}): {last}")]
    Connect {
        node: String,
        destination: String,
        last: String,
    },
}

/// Master connections, one per node, for the life of one medic process (and, kept ones,
/// beyond it).
pub struct SshPool {
    base: PathBuf,
    own_dir: PathBuf,
    sessions: Mutex<HashMap<String, Slot>>,
}

impl Default for SshPool {
    fn default() -> Self {
        Self::new()
    }
}

/// The user and destination a node is reached as, for messages and dry-runs.
pub(crate) fn describe_destination(node: &NodeEntry) -> String {
    let user = node
        .ssh
        .user
        .clone()
        .unwrap_or_else(|| "(ssh config user)".to_string());
    match node.ssh.port {
        Some(p) => format!("{user}@{}:{p}", node.address),
        None => format!("{user}@{}", node.address),
    }
}

/// How long the node's master outlives medic, in whole seconds (0: not at all).
fn persist_secs(node: &NodeEntry) -> u64 {
    u64::from(node.ssh.persist_secs.unwrap_or(DEFAULT_PERSIST_SECS))
}

impl SshPool {
    pub(crate) fn new() -> Self {
        let base = control::base_dir();
        control::close_orphaned_masters(&base);
        SshPool {
            own_dir: base.join(std::process::id().to_string()),
            base,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, node: &str) -> Slot {
        let mut map = self.sessions.lock().expect("ssh pool lock");
        map.entry(node.to_string()).or_default().clone()
    }

    /// The master connection to `node`, opened on first use. A master that went away (idle
    /// timeout, killed) shows up when a command fails to start: call [`SshPool::reconnect`].
    pub(crate) async fn session(&self, node: &NodeEntry) -> Result<Arc<Session>, SshError> {
        let slot = self.slot(&node.name);
        slot.get_or_init(|| self.connect(node)).await.clone()
    }

    /// Drops the node's master and opens a new one.
    pub(crate) async fn reconnect(&self, node: &NodeEntry) -> Result<Arc<Session>, SshError> {
        self.forget(&node.name);
        self.session(node).await
    }

    fn forget(&self, node: &str) {
        self.sessions.lock().expect("ssh pool lock").remove(node);
    }

    /// Reuses the node's kept master if one answers, or starts one.
    async fn connect(&self, node: &NodeEntry) -> Result<Arc<Session>, SshError> {
        // The destination follows `--` on ssh's command line; the inventory also refuses
        // addresses that look like options at load, and this holds for any other node entry.
        crate::inventory::check_host(&node.address).map_err(|reason| SshError::Address {
            node: node.name.clone(),
            reason,
        })?;
        let persist = persist_secs(node);
        let dir = if persist > 0 {
            control::persistent_dir(&self.base)
        } else {
            self.own_dir.clone()
        };
        for d in [&self.base, &dir] {
            control::ensure_private_dir(d).map_err(|e| SshError::ControlDir {
                dir: d.clone(),
                source: Arc::new(e),
            })?;
        }
        let socket = dir.join(options::socket_key(node));
        let timeout = options::connect_timeout(node);
        let deadline = Instant::now() + Duration::from_secs_f64(timeout + 5.0);
        let lock_path = socket.with_extension("lock");
        let _lock = control::lock(&lock_path, deadline)
            .await
            .map_err(|e| SshError::Lock {
                path: lock_path.clone(),
                source: Arc::new(e),
            })?;
        if control::socket_is_trusted(&socket) {
            let session = Session::resume_mux(socket.clone().into_boxed_path(), None);
            let answer =
                tokio::time::timeout(Duration::from_secs(CHECK_SECS), session.check()).await;
            if matches!(answer, Ok(Ok(()))) {
                return Ok(Arc::new(session));
            }
            // Dead (or stuck): take its place; a stuck one ends at its idle timeout.
            let _ = std::fs::remove_file(&socket);
        }
        let idle = if persist > 0 {
            persist
        } else {
            ORPHAN_IDLE_SECS
        };
        start_master(node, &socket, idle, deadline).await?;
        control::write_note(
            &socket,
            &MasterNote {
                node: node.name.clone(),
                destination: describe_destination(node),
            },
        );
        let log = socket.with_extension("log").into_boxed_path();
        Ok(Arc::new(Session::resume_mux(
            socket.into_boxed_path(),
            Some(log),
        )))
    }

    /// Closes the masters of this process (on exit, Ctrl-C included), all at once (one
    /// `ssh -O exit` each: after a run on many nodes, one after another would add up); kept
    /// masters stay for the next run.
    pub(crate) async fn close_all(&self) {
        let slots: Vec<Slot> = self
            .sessions
            .lock()
            .expect("ssh pool lock")
            .drain()
            .map(|(_, s)| s)
            .collect();
        let mut closing = tokio::task::JoinSet::new();
        for slot in slots {
            if let Some(Ok(session)) = Arc::try_unwrap(slot)
                .ok()
                .and_then(|cell| cell.into_inner())
            {
                if let Ok(session) = Arc::try_unwrap(session) {
                    if session.control_socket().starts_with(&self.own_dir) {
                        closing.spawn(async move {
                            let _ = session.close().await;
                        });
                    }
                }
            }
        }
        while closing.join_next().await.is_some() {}
        let _ = std::fs::remove_dir_all(&self.own_dir);
    }
}

/// Starts a master for `node` at `socket` (`ssh -M -f`: it forks once authenticated) that
/// exits after `idle` seconds without a command.
async fn start_master(
    node: &NodeEntry,
    socket: &Path,
    idle: u64,
    deadline: Instant,
) -> Result<(), SshError> {
    let log = socket.with_extension("log");
    let _ = std::fs::remove_file(&log);
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .arg("-E")
        .arg(&log)
        .arg("-S")
        .arg(socket)
        .args(["-M", "-f", "-N", "-o"])
        .arg(format!("ControlPersist={idle}s"))
        .args(options::connection_args(node))
        .arg("--")
        .arg(&node.address);
    let status = tokio::time::timeout_at(deadline.into(), ssh.status())
        .await
        .map_err(|_| SshError::ConnectTimeout {
            destination: describe_destination(node),
            secs: options::connect_timeout(node),
        })?
        .map_err(|e| SshError::Spawn {
            node: node.name.clone(),
            source: Arc::new(e),
        })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Err(explain_connect_error(node, &text))
}

/// Turns ssh's connection failure into an operator message; host key problems say so plainly.
fn explain_connect_error(node: &NodeEntry, text: &str) -> SshError {
    let destination = describe_destination(node);
    let known_hosts = options::known_hosts_files(node)
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let node_name = node.name.clone();
    // ssh reports these only as text in its log: this is where the text becomes a kind.
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return SshError::HostKeyChanged {
            node: node_name,
            destination,
            known_hosts,
        };
    }
    if text.contains("Host key verification failed") || text.contains("host key is known") {
        return SshError::HostKeyUnknown {
            node: node_name,
            destination,
            known_hosts,
        };
    }
    if text.contains("Too many authentication failures") {
        return SshError::TooManyAuthFailures {
            node: node_name,
            destination,
            fix: if node.ssh.identity_file.is_some() {
                "medic already passes IdentitiesOnly=yes with ssh.identity_file, so the other keys come from ~/.ssh/config (IdentityFile or CertificateFile lines matching this host): remove them for this host, or raise MaxAuthTries on the node"
            } else {
                "Set ssh.identity_file in the inventory (medic then passes IdentitiesOnly=yes, so only that key is offered), or add `IdentitiesOnly yes` and the right `IdentityFile` for this host in ~/.ssh/config, or remove keys from your agent (ssh-add -D)"
            },
        };
    }
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("ssh exited without saying why")
        .trim()
        .to_string();
    SshError::Connect {
        node: node_name,
        destination,
        last,
    }
}

/// A kept master that [`close_kept_masters`] ended.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ClosedMaster {
    /// The node it was opened for, and as whom and where (from its note).
    pub(crate) node: Option<String>,
    pub(crate) destination: Option<String>,
    pub(crate) socket: PathBuf,
    /// Whether a master answered (false: only a stale socket was removed).
    pub(crate) was_running: bool,
}

/// Ends the kept masters (`ssh.persist`) of `nodes` — those their settings would use now, and
/// any opened for the same destination with other settings — or, with `None`, every kept
/// master of this user.
pub(crate) fn close_kept_masters(nodes: Option<&[NodeEntry]>) -> Vec<ClosedMaster> {
    let dir = control::persistent_dir(&control::base_dir());
    let wanted = |m: &control::KeptMaster| match nodes {
        None => true,
        Some(nodes) => nodes.iter().any(|n| {
            options::socket_key(n) == m.key
                || m.note
                    .as_ref()
                    .is_some_and(|note| note.destination == describe_destination(n))
        }),
    };
    control::kept_masters(&dir)
        .into_iter()
        .filter(wanted)
        .map(|m| ClosedMaster {
            was_running: control::exit_master(&m.socket),
            node: m.note.as_ref().map(|n| n.node.clone()),
            destination: m.note.map(|n| n.destination),
            socket: m.socket,
        })
        .collect()
}
