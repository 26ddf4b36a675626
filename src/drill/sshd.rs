//! The drill's one `sshd`: a listen address per reachable node, each address's sessions forced
//! through the node shell with the node's name.

use std::time::{Duration, Instant};

use super::error::{DrillError, Failure};
use super::state::{write_file, Drill, DrillNode};
use crate::template::shell_quote;

/// How long sshd has to accept connections after a start or reload.
const SSH_WAIT: Duration = Duration::from_secs(10);

impl Drill {
    /// The sshd configuration: one listen address per reachable node, each address's sessions
    /// forced through the node shell with the node's name.
    pub(super) fn sshd_config(&self) -> String {
        let ssh = self.dir.join("ssh");
        let mut config = format!(
            "Port {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nMaxStartups 200:30:400\n\
             MaxSessions 200\nLogLevel ERROR\nSetEnv SHLVL=1\n",
            self.ssh_port,
            ssh.join("host_key").display(),
            ssh.join("sshd.pid").display(),
            ssh.join("authorized_keys").display(),
        );
        for n in self.nodes.iter().filter(|n| !n.lost) {
            config.push_str(&format!("ListenAddress {}\n", n.address));
        }
        for n in self.nodes.iter().filter(|n| !n.lost) {
            config.push_str(&format!(
                "Match LocalAddress {}\n    ForceCommand {} {}\n",
                n.address,
                shell_quote(&self.dir.join("bin/node-shell").display().to_string()),
                shell_quote(&n.name)
            ));
        }
        config
    }

    /// Rewrites the sshd configuration and has sshd reload it (it re-executes itself; open
    /// connections stay), then waits until the reachable addresses accept again (blocking:
    /// for the drill's synchronous commands).
    pub(crate) fn reload_sshd(&self) -> Result<(), DrillError> {
        self.signal_sshd_reload()?;
        std::thread::sleep(Duration::from_millis(100));
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
    pub(super) async fn reload_sshd_async(&self) -> Result<(), DrillError> {
        self.signal_sshd_reload()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.wait_ssh().await
    }

    fn signal_sshd_reload(&self) -> Result<(), DrillError> {
        write_file(
            &self.dir.join("ssh/sshd_config"),
            &self.sshd_config(),
            0o600,
        )?;
        if let Some(p) = self.sshd {
            p.signal(libc::SIGHUP);
        }
        Ok(())
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
            log: self.dir.join("ssh/sshd.log"),
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
