//! SSH connections to cluster nodes through the `openssh` crate (native multiplexing).
//!
//! 1. One master connection per node per medic process, opened on first use and shared by every
//!    phase; commands run as new channels over it, so a second phase costs no handshake.
//! 2. The system `ssh` client makes the connection, so `~/.ssh/config` (`Host` aliases, agents,
//!    `ProxyJump`) works as operators expect.
//! 3. Host keys are checked strictly against the inventory's (or the user's) known_hosts;
//!    `accept-new` only when the inventory says so; never off.
//! 4. Masters are closed when medic exits. Each process keeps its sockets under its own
//!    directory (`/tmp/medic-UID/PID`); a new pool closes the masters of medic processes that
//!    died (SIGKILL) and removes their directories. A master also exits by itself after a short
//!    idle time (`ControlPersist`), and the pool reconnects when a master has gone.
//! 5. The control directory is short: socket paths over ~100 bytes fail.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use tokio::sync::OnceCell;

use crate::inventory::{HostKeyChecking, NodeEntry};

/// How long an unused master connection stays up (also after medic was killed).
const MASTER_IDLE_SECS: usize = 15;
const DEFAULT_CONNECT_TIMEOUT_SECS: f64 = 10.0;

type Slot = Arc<OnceCell<Result<Arc<Session>, SshError>>>;

/// Why a node's master connection could not be made, named after the failed step. The error
/// is cached with the node's slot (every phase waiting on it gets the same answer), so its
/// sources are shared (`Arc`).
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// The address would read as an option to `ssh` (or is not a host at all).
    #[error("node {node}: address {reason}")]
    Address { node: String, reason: String },
    #[error("create ssh control directory {}: {source}", .dir.display())]
    ControlDir {
        dir: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("connect to {destination}: no answer within {secs:.0}s")]
    ConnectTimeout { destination: String, secs: f64 },
    #[error("the host key of node {node} ({destination}) has CHANGED since it was recorded in {known_hosts}; this happens when a host is reinstalled, or when someone intercepts the connection. Verify the new key out of band, then replace the old entry (ssh-keygen -R) and retry")]
    HostKeyChanged {
        node: String,
        destination: String,
        known_hosts: String,
        source: Arc<openssh::Error>,
    },
    #[error("node {node} ({destination}) is not in {known_hosts} and host key checking is strict; verify its key and add it (ssh-keyscan), or set `ssh: {{host_key_checking: accept-new}}` in the inventory to trust it on first contact")]
    HostKeyUnknown {
        node: String,
        destination: String,
        known_hosts: String,
        source: Arc<openssh::Error>,
    },
    /// Any other failure of the handshake; `last` is the last line ssh printed.
    #[error("connect to node {node} ({destination}): {last}")]
    Connect {
        node: String,
        destination: String,
        last: String,
        source: Arc<openssh::Error>,
    },
}

/// Master connections, one per node, for the life of one medic process.
pub struct SshPool {
    control_dir: PathBuf,
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

impl SshPool {
    pub(crate) fn new() -> Self {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let base = std::env::temp_dir().join(format!("medic-{uid}"));
        close_orphaned_masters(&base);
        SshPool {
            control_dir: base.join(std::process::id().to_string()),
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

    async fn connect(&self, node: &NodeEntry) -> Result<Arc<Session>, SshError> {
        use std::os::unix::fs::PermissionsExt;
        // The openssh crate puts the destination after its options without `--`, so an address
        // must never look like an option. The inventory refuses such addresses at load; this
        // holds for any other way a node entry is made.
        crate::inventory::check_host(&node.address).map_err(|reason| SshError::Address {
            node: node.name.clone(),
            reason,
        })?;
        let base = self
            .control_dir
            .parent()
            .expect("per-process dir has a parent");
        std::fs::create_dir_all(&self.control_dir)
            .and_then(|_| std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700)))
            .and_then(|_| {
                std::fs::set_permissions(&self.control_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| SshError::ControlDir {
                dir: self.control_dir.clone(),
                source: Arc::new(e),
            })?;
        let mut b = SessionBuilder::default();
        b.control_directory(&self.control_dir)
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(MASTER_IDLE_SECS).expect("non-zero"),
            ))
            .server_alive_interval(Duration::from_secs(5))
            .known_hosts_check(match node.ssh.host_key_checking {
                Some(HostKeyChecking::AcceptNew) => KnownHosts::Add,
                _ => KnownHosts::Strict,
            });
        let timeout = node
            .ssh
            .connect_timeout_secs
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS);
        b.connect_timeout(Duration::from_secs_f64(timeout.max(1.0)));
        if let Some(user) = &node.ssh.user {
            b.user(user.clone());
        }
        if let Some(port) = node.ssh.port {
            b.port(port);
        }
        if let Some(key) = &node.ssh.identity_file {
            b.keyfile(key);
        }
        if let Some(kh) = crate::action::ssh_host_key::user_known_hosts(&node.ssh) {
            b.user_known_hosts_file(kh);
        }
        if let Some(jump) = &node.ssh.jump_host {
            b.jump_hosts([jump.as_str()]);
        }
        // ssh's own timeout covers the TCP connect; this one covers a stuck handshake too.
        let connect = b.connect_mux(&node.address);
        let session = tokio::time::timeout(Duration::from_secs_f64(timeout + 5.0), connect)
            .await
            .map_err(|_| SshError::ConnectTimeout {
                destination: describe_destination(node),
                secs: timeout,
            })?
            .map_err(|e| explain_connect_error(node, e))?;
        Ok(Arc::new(session))
    }

    /// Closes every master connection (on exit, Ctrl-C included).
    pub(crate) async fn close_all(&self) {
        let slots: Vec<Slot> = self
            .sessions
            .lock()
            .expect("ssh pool lock")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for slot in slots {
            if let Some(Ok(session)) = Arc::try_unwrap(slot)
                .ok()
                .and_then(|cell| cell.into_inner())
            {
                if let Ok(session) = Arc::try_unwrap(session) {
                    let _ = session.close().await;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }
}

/// Asks the masters of medic processes that no longer exist to exit, and removes their
/// directories. A killed medic cannot close its own masters; its successor does.
fn close_orphaned_masters(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let sockets = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("master"))
            .filter(|p| p.exists());
        for socket in sockets {
            let _ = std::process::Command::new("ssh")
                .arg("-S")
                .arg(&socket)
                .args(["-O", "exit", "medic-orphan"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Turns ssh's connection failure into an operator message; host key problems say so plainly.
fn explain_connect_error(node: &NodeEntry, e: openssh::Error) -> SshError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let destination = describe_destination(node);
    let known_hosts = node
        .ssh
        .known_hosts
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.ssh/known_hosts".to_string());
    let node = node.name.clone();
    let source = Arc::new(e);
    // ssh reports these only as text on its stderr: this is where the text becomes a kind.
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return SshError::HostKeyChanged {
            node,
            destination,
            known_hosts,
            source,
        };
    }
    if text.contains("Host key verification failed")
        || text.contains("No ED25519 host key is known")
        || text.contains("host key is known")
    {
        return SshError::HostKeyUnknown {
            node,
            destination,
            known_hosts,
            source,
        };
    }
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(&text)
        .trim()
        .to_string();
    SshError::Connect {
        node,
        destination,
        last,
        source,
    }
}
