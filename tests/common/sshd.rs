//! A real `sshd` for tests: generated host and user keys in a temp dir, listening on one port
//! on several loopback addresses (127.0.0.2, 127.0.0.3, ...), one per node; stopped by pid.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub addresses: Vec<String>,
    pub user: String,
    pub user_key: PathBuf,
    pub known_hosts: PathBuf,
    child: Child,
}

fn keygen(path: &std::path::Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen (install openssh-client)");
    assert!(status.success());
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub fn start(nodes: usize) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("medic-sshd-")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_key");
        let user_key = dir.path().join("user_key");
        keygen(&host_key);
        keygen(&user_key);
        std::fs::copy(
            dir.path().join("user_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let port = free_port();
        let addresses: Vec<String> = (0..nodes).map(|i| format!("127.0.0.{}", i + 2)).collect();
        let mut config = format!(
            "Port {port}\nHostKey {}\nPidFile {}/sshd.pid\nAuthorizedKeysFile {}/authorized_keys\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin yes\nMaxStartups 200:30:400\nMaxSessions 200\n\
             LogLevel VERBOSE\nSetEnv SHLVL=1\n",
            host_key.display(),
            dir.path().display(),
            dir.path().display()
        );
        for a in &addresses {
            config.push_str(&format!("ListenAddress {a}\n"));
        }
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd (install openssh-server)");
        let host_pub = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = dir.path().join("known_hosts");
        let lines: Vec<String> = addresses
            .iter()
            .map(|a| format!("[{a}]:{port} {}", host_pub.join(" ")))
            .collect();
        std::fs::write(&known_hosts, lines.join("\n") + "\n").unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect((addresses[0].as_str(), port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not start: {}",
                std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        Sshd {
            dir,
            port,
            addresses,
            user,
            user_key,
            known_hosts,
            child,
        }
    }

    /// An inventory naming the nodes n1, n2, ... with `roles(i)` and extra top-level YAML.
    pub fn inventory(
        &self,
        roles: impl Fn(usize) -> &'static str,
        extra_nodes: &str,
        ssh_extra: &str,
    ) -> String {
        let mut yaml = format!(
            "name: test\nssh:\n  user: {}\n  port: {}\n  identity_file: {}\n  known_hosts: {}\n  connect_timeout: 3s\n{ssh_extra}nodes:\n",
            self.user,
            self.port,
            self.user_key.display(),
            self.known_hosts.display()
        );
        for (i, a) in self.addresses.iter().enumerate() {
            yaml.push_str(&format!(
                "  - {{name: n{}, address: {a}, roles: [{}]}}\n",
                i + 1,
                roles(i)
            ));
        }
        yaml.push_str(extra_nodes);
        yaml
    }
}

impl Sshd {
    /// Writes `cluster.yaml` into `dir`: the nodes n1, n2, ... as workers.
    pub fn write_worker_inventory(&self, dir: &std::path::Path) {
        std::fs::write(
            dir.join("cluster.yaml"),
            self.inventory(|_| "worker", "", ""),
        )
        .unwrap();
    }
}

impl Sshd {
    /// TCP connections sshd has accepted so far (its log says `Connection from` for each).
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Connection from ")
            .count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Masters medic keeps for later runs (ssh.persist) would idle on for a minute after
        // the test: end those that reach this server, by pid.
        let port = format!(" -p {} ", self.port);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with("ssh ") && cmdline.contains(" -M ") && cmdline.contains(&port) {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
}
