//! The drill's sshds: one per reachable node, listening on the node's address with the node's
//! own host key (as separate machines have), each session forced through the node shell with
//! the node's name. A lost node's sshd is stopped; a provisioned node gets a new host key, as a
//! reinstalled machine does.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::error::{setup, DrillError, Failure};
use super::process::{spawn_detached, Proc};
use super::state::{write_file, Drill, DrillNode};
use crate::template::shell_quote;

/// How long sshd has to accept connections after a start.
const SSH_WAIT: Duration = Duration::from_secs(10);

impl Drill {
    /// The node's SSH host key (private; `.pub` beside it).
    pub(crate) fn host_key(&self, name: &str) -> PathBuf {
        self.dir.join("ssh").join(format!("host_key-{name}"))
    }

    /// The sshd configuration of one node: its address, its host key, its node shell.
    fn sshd_config(&self, n: &DrillNode) -> String {
        let ssh = self.dir.join("ssh");
        format!(
            "Port {}\nListenAddress {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nMaxStartups 200:30:400\n\
             MaxSessions 200\nLogLevel ERROR\nSetEnv SHLVL=1\nForceCommand {} {}\n",
            self.ssh_port,
            n.address,
            self.host_key(&n.name).display(),
            ssh.join(format!("sshd-{}.pid", n.name)).display(),
            ssh.join("authorized_keys").display(),
            shell_quote(&self.dir.join("bin/node-shell").display().to_string()),
            shell_quote(&n.name)
        )
    }

    /// Makes a new host key for the node (replacing its old one) and returns its SHA256
    /// fingerprint (`SHA256:…`).
    pub(crate) fn new_host_key(&self, name: &str) -> Result<String, DrillError> {
        let key = self.host_key(name);
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("medic-drill-{name}"))
            .arg("-f")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| Failure::Start {
                what: "ssh-keygen (install openssh-client)",
                source,
            })?;
        if !out.status.success() {
            return Err(Failure::Tool {
                what: "ssh-keygen",
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
            .into());
        }
        self.host_key_fingerprint(name)
    }

    /// The SHA256 fingerprint of the node's host key, as `ssh-keygen -l` prints it.
    pub(crate) fn host_key_fingerprint(&self, name: &str) -> Result<String, DrillError> {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.host_key(name).with_extension("pub"))
            .output()
            .map_err(setup("run ssh-keygen -l"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string())
    }

    /// Starts the sshd of every reachable node that has none running and stops the sshd of
    /// every lost node (saved), then waits until the reachable addresses accept (blocking:
    /// for the drill's synchronous commands).
    pub(crate) fn reload_sshd(&mut self) -> Result<(), DrillError> {
        self.sync_sshds()?;
        let started = Instant::now();
        for n in self.nodes.iter().filter(|n| !n.lost) {
            while std::net::TcpStream::connect((n.address.as_str(), self.ssh_port)).is_err() {
                if started.elapsed() > SSH_WAIT {
                    return Err(self.sshd_not_accepting(n));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// [`Drill::reload_sshd`] for async code.
    pub(super) async fn reload_sshd_async(&mut self) -> Result<(), DrillError> {
        self.sync_sshds()?;
        self.wait_ssh().await
    }

    fn sync_sshds(&mut self) -> Result<(), DrillError> {
        std::fs::create_dir_all("/run/sshd").ok();
        for i in 0..self.nodes.len() {
            let n = self.nodes[i].clone();
            let running = n.sshd.filter(|p| p.alive());
            match (n.lost, running) {
                (true, Some(p)) => {
                    if !p.stop(Duration::from_secs(3)) {
                        return Err(Failure::DidNotStop {
                            what: format!("sshd {}", n.name),
                            pid: p.pid,
                        }
                        .into());
                    }
                    self.nodes[i].sshd = None;
                }
                (false, None) => {
                    let pid = self.start_node_sshd(&n)?;
                    self.nodes[i].sshd = Some(Proc::of(pid)?);
                }
                _ => {}
            }
            self.save()?;
        }
        Ok(())
    }

    fn start_node_sshd(&self, n: &DrillNode) -> Result<u32, DrillError> {
        let ssh = self.dir.join("ssh");
        let config = ssh.join(format!("sshd_config-{}", n.name));
        write_file(&config, &self.sshd_config(n), 0o600)?;
        let log = std::fs::File::create(self.sshd_log(n)).map_err(setup("create the sshd log"))?;
        spawn_detached(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config),
            log,
        )
        .map_err(|source| {
            Failure::Start {
                what: "start sshd (install openssh-server)",
                source,
            }
            .into()
        })
    }

    fn sshd_log(&self, n: &DrillNode) -> PathBuf {
        self.dir.join("ssh").join(format!("sshd-{}.log", n.name))
    }

    /// Waits until every reachable node's address accepts SSH connections.
    pub(super) async fn wait_ssh(&self) -> Result<(), DrillError> {
        let started = Instant::now();
        for n in self.nodes.iter().filter(|n| !n.lost) {
            while !accepts(&n.address, self.ssh_port).await {
                if started.elapsed() > SSH_WAIT {
                    return Err(self.sshd_not_accepting(n));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn sshd_not_accepting(&self, n: &DrillNode) -> DrillError {
        Failure::SshdNotAccepting {
            address: n.address.clone(),
            port: self.ssh_port,
            log: self.sshd_log(n),
        }
        .into()
    }
}

/// Whether `address:port` accepts a TCP connection within half a second.
pub(super) async fn accepts(address: &str, port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect((address, port));
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}
