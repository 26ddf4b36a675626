//! Real etcd members for tests (Debian's etcd-server): started on free loopback ports from empty
//! data dirs, optionally serving clients over TLS with certificates made here by `openssl`;
//! torn down with SIGKILL, waiting until the ports are free.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::sshd::free_port;

pub struct Member {
    pub name: String,
    pub peer_port: u16,
    pub client_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub tls: bool,
    // One cluster at a time per test binary: etcd's elections need CPU on a 2-core machine.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run helper command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl EtcdCluster {
    pub fn start(n: usize, tls: bool) -> EtcdCluster {
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("medic-etcd-")
            .tempdir()
            .unwrap();
        if tls {
            make_certs(dir.path());
        }
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                peer_port: free_port(),
                client_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            dir,
            members,
            tls,
            _turn: turn,
        };
        let initial = cluster.initial_cluster(None);
        for i in 0..n {
            cluster.launch(i, &initial, "new");
        }
        cluster.wait_healthy((0..n).collect());
        cluster
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    pub fn client_url(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.members[i].client_port
        )
    }

    pub fn initial_cluster(&self, only: Option<&[usize]>) -> String {
        (0..self.members.len())
            .filter(|i| only.is_none_or(|o| o.contains(i)))
            .map(|i| format!("{}={}", self.members[i].name, self.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn launch(&mut self, i: usize, initial_cluster: &str, state: &str) {
        let m = &self.members[i];
        let data = self.dir.path().join(format!("{}.data", m.name));
        let _ = std::fs::remove_dir_all(&data);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-peer-urls")
            .arg(self.peer_url(i))
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url(i))
            .arg("--listen-client-urls")
            .arg(self.client_url(i))
            .arg("--advertise-client-urls")
            .arg(self.client_url(i))
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg("medic-test")
            .args([
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log);
        if self.tls {
            cmd.arg("--cert-file")
                .arg(self.cert("server.crt"))
                .arg("--key-file")
                .arg(self.cert("server.key"))
                .arg("--trusted-ca-file")
                .arg(self.cert("ca.crt"))
                .arg("--client-cert-auth");
        }
        self.members[i].child = Some(cmd.spawn().expect("start etcd (install etcd-server)"));
    }

    /// Adds a member slot (not yet in etcd's membership) and returns its index.
    pub fn new_slot(&mut self, name: &str) -> usize {
        self.members.push(Member {
            name: name.to_string(),
            peer_port: free_port(),
            client_port: free_port(),
            child: None,
        });
        self.members.len() - 1
    }

    /// Starts a member that was added with `member add`, joining the existing cluster.
    pub fn start_joining(&mut self, i: usize, initial_cluster: &str) {
        self.launch(i, initial_cluster, "existing");
    }

    pub fn wait_healthy(&self, which: Vec<usize>) {
        let endpoints: Vec<String> = which.iter().map(|i| self.client_url(*i)).collect();
        let started = Instant::now();
        loop {
            let out = self.etcdctl(&[
                "endpoint",
                "health",
                &format!("--endpoints={}", endpoints.join(",")),
            ]);
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "etcd did not become healthy: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.path().join("m1.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let live: Vec<String> = (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .map(|i| self.client_url(i))
            .collect();
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .arg("--command-timeout=5s");
        if self.tls {
            cmd.arg(format!("--cacert={}", self.cert("ca.crt").display()))
                .arg(format!("--cert={}", self.cert("client.crt").display()))
                .arg(format!("--key={}", self.cert("client.key").display()));
        }
        cmd.args(args)
            .output()
            .expect("run etcdctl (install etcd-client)")
    }

    /// Member names (empty for added-but-unstarted members), as etcd reports them.
    pub fn member_names(&self) -> Vec<String> {
        let out = self.etcdctl(&["member", "list", "-w", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<String> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        names
    }

    /// The index of the member that is the raft leader now.
    pub fn leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let list = v.as_array().cloned().unwrap_or_default();
        let leader = list
            .first()
            .and_then(|e| e["Status"]["leader"].as_u64())
            .unwrap_or(0);
        let endpoint = list
            .iter()
            .find(|e| e["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|e| e["Endpoint"].as_str())
            .unwrap_or_default()
            .to_string();
        (0..self.members.len())
            .find(|i| self.client_url(*i) == endpoint)
            .expect("a leader")
    }

    /// The process ID of member `i`, if it runs (to stop and continue it: a partition).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(|c| c.id())
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let started = Instant::now();
        while !(port_free(self.members[i].client_port) && port_free(self.members[i].peer_port)) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ports of {} stayed busy",
                self.members[i].name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An inventory with one node per member (same names) and the etcd endpoints.
    pub fn inventory(&self, extra_etcd: &str) -> String {
        let mut yaml = String::from("name: etcd-test\nnodes:\n");
        for m in &self.members {
            yaml.push_str(&format!(
                "  - {{name: {}, address: 127.0.0.1, roles: [control-plane, etcd]}}\n",
                m.name
            ));
        }
        let endpoints: Vec<String> = (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect();
        yaml.push_str(&format!("etcd:\n  endpoints: [{}]\n", endpoints.join(", ")));
        if self.tls {
            for f in ["ca", "cert", "key"] {
                let file = match f {
                    "ca" => "ca.crt",
                    "cert" => "client.crt",
                    _ => "client.key",
                };
                yaml.push_str(&format!("  {f}: {}\n", self.cert(file).display()));
            }
        }
        yaml.push_str(extra_etcd);
        yaml
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn make_certs(dir: &std::path::Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=medic-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}
