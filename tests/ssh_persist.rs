//! SSH masters that outlive one medic run (`ssh.persist`), against a real sshd whose log counts
//! the TCP connections it accepted: reuse by the next run, `medic ssh close`, sockets and
//! directories that are not trusted, `persist: 0`, and an agent full of other keys.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::{Env, Run};

const STEPS: &str = r#"
name: p
phases:
  - id: a
    ssh: {on: [n1, n2], run: "echo a"}
  - id: b
    ssh: {on: [n1, n2], run: "echo b"}
  - id: c
    ssh: {on: [n1, n2], run: "echo c"}
  - id: d
    ssh: {on: [n1, n2], run: "echo d"}
  - id: e
    ssh: {on: [n1, n2], run: "echo e"}
"#;

/// The test's own runtime directory: medic keeps its control sockets under it (`medic/p`), so
/// tests running side by side never see each other's masters.
fn runtime_dir(env: &Env) -> PathBuf {
    let dir = env.file("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn medic(env: &Env, args: &[&str]) -> Run {
    env.medic(args)
        .env("XDG_RUNTIME_DIR", runtime_dir(env).to_str().unwrap())
}

fn kept_dir(env: &Env) -> PathBuf {
    runtime_dir(env).join("medic/p")
}

/// The control sockets kept in the test's directory.
fn sockets(env: &Env) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir(kept_dir(env))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// A test's sshd and the connections it had accepted before medic ran (its readiness probe).
struct Server {
    sshd: Sshd,
    before: usize,
}

impl Server {
    /// The connections medic opened so far, once at least `n` (or 2 s passed): sshd logs a
    /// connection as its child starts, so give it a moment to be written.
    fn connections(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.sshd.connections() < self.before + n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.sshd.connections() - self.before
    }
}

fn setup(ssh_extra: &str) -> (Env, Server) {
    let sshd = Sshd::start(2);
    let deadline = Instant::now() + Duration::from_secs(2);
    while sshd.connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = sshd.connections();
    let env = Env::new();
    std::fs::write(
        env.file("cluster.yaml"),
        sshd.inventory(|_| "worker", "", ssh_extra),
    )
    .unwrap();
    env.procedure("p", STEPS);
    medic(&env, &["start", "p", "--manual"]).run().code(0);
    (env, Server { sshd, before })
}

fn step(env: &Env, phase: &str) {
    medic(env, &["plan", "execute", &format!("--phase=/{phase}")])
        .run()
        .code(0);
}

#[test]
fn the_next_run_reuses_the_masters_and_ssh_close_ends_them() {
    let (env, server) = setup("");
    assert_eq!(server.connections(0), 0);
    step(&env, "a");
    assert_eq!(server.connections(2), 2, "one connection per node");
    step(&env, "b");
    assert_eq!(
        server.connections(3),
        2,
        "the second run opened no new connection"
    );
    let closed = medic(&env, &["ssh", "close", "-o", "json"])
        .run()
        .code(0)
        .json();
    let closed = closed["closed"].as_array().unwrap().clone();
    assert_eq!(closed.len(), 2, "{closed:?}");
    let mut nodes: Vec<&str> = closed.iter().map(|c| c["node"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
    assert!(
        closed.iter().all(|c| c["was_running"] == true),
        "{closed:?}"
    );
    assert!(sockets(&env).is_empty(), "{:?}", sockets(&env));
    no_masters_left(&server.sshd);
    step(&env, "c");
    assert_eq!(server.connections(4), 4, "reconnected after ssh close");
    // --node closes only that node's.
    medic(&env, &["ssh", "close", "--node", "n1"])
        .run()
        .code(0)
        .stdout_contains("closed the ssh master of n1 (");
    step(&env, "d");
    assert_eq!(server.connections(6), 5, "only n1 reconnected");
    medic(&env, &["ssh", "close", "--node", "n9"])
        .run()
        .code(2)
        .stderr_contains("node `n9` is not in the inventory");
    medic(&env, &["ssh", "close"]).run().code(0);
}

#[test]
fn sockets_and_directories_others_could_use_are_refused_and_replaced() {
    let (env, server) = setup("  persist: 20s\n");
    step(&env, "a");
    assert_eq!(server.connections(2), 2);
    let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    // The directory was writable by others: its sockets are not used, and it is private again.
    std::fs::set_permissions(kept_dir(&env), std::fs::Permissions::from_mode(0o777)).unwrap();
    step(&env, "b");
    assert_eq!(server.connections(4), 4, "new masters in place of the old");
    assert_eq!(mode(&kept_dir(&env)), 0o700);

    // One socket open to others: that node reconnects, the other reuses its master.
    let socks = sockets(&env);
    assert_eq!(socks.len(), 2);
    std::fs::set_permissions(&socks[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    step(&env, "c");
    assert_eq!(
        server.connections(6),
        5,
        "only the loose socket was replaced"
    );
    assert!(sockets(&env).iter().all(|s| mode(s) == 0o600));

    // A socket owned by another user (only root can make one): replaced as well.
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        let socks = sockets(&env);
        std::os::unix::fs::chown(&socks[1], Some(65534), Some(65534)).unwrap();
        step(&env, "d");
        assert_eq!(server.connections(7), 6, "the foreign socket was replaced");
        use std::os::unix::fs::MetadataExt;
        assert!(sockets(&env)
            .iter()
            .all(|s| std::fs::metadata(s).unwrap().uid() == 0));
    }
    medic(&env, &["ssh", "close"]).run().code(0);
}

#[test]
fn persist_zero_keeps_no_master_after_medic_exits() {
    let (env, server) = setup("  persist: 0\n");
    step(&env, "a");
    assert_eq!(server.connections(2), 2);
    assert!(sockets(&env).is_empty(), "{:?}", sockets(&env));
    no_masters_left(&server.sshd);
    let own_dirs: Vec<_> = std::fs::read_dir(runtime_dir(&env).join("medic"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_str().unwrap().parse::<u32>().is_ok())
        .collect();
    assert!(own_dirs.is_empty(), "{own_dirs:?}");
    step(&env, "b");
    assert_eq!(server.connections(4), 4, "each run connects anew");
}

/// Waits (5 s at most) for every master of this sshd's to have exited.
fn no_masters_left(sshd: &Sshd) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ssh_masters(sshd).is_empty() {
        assert!(
            Instant::now() < deadline,
            "masters left: {:?}",
            ssh_masters(sshd)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ssh -M` processes that carry this sshd's user key on their command line.
fn ssh_masters(sshd: &Sshd) -> Vec<String> {
    let key = sshd.user_key.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ssh ") && c.contains(" -M ") && c.contains(&key))
        .collect()
}

/// An ssh-agent of the test's, stopped by pid when dropped.
struct Agent {
    socket: PathBuf,
    child: Child,
}

impl Agent {
    /// An agent holding `keys` keys that no server knows.
    fn with_unrelated_keys(env: &Env, keys: usize) -> Agent {
        let socket = env.file("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..keys {
            let key = env.file(&format!("unrelated{i}"));
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let ok = Command::new("ssh-add")
                .arg("-q")
                .arg(&key)
                .env("SSH_AUTH_SOCK", &socket)
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-add");
        }
        Agent { socket, child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_full_of_other_keys_does_not_use_up_the_servers_auth_tries() {
    let (env, server) = setup("  persist: 0\n");
    let agent = Agent::with_unrelated_keys(&env, 10);
    let with_agent =
        |args: &[&str]| medic(&env, args).env("SSH_AUTH_SOCK", agent.socket.to_str().unwrap());
    // The inventory names the key: only it is offered, whatever the agent holds.
    with_agent(&["plan", "execute", "--phase=/a"])
        .run()
        .code(0)
        .stdout_contains("[n1] a");
    // Without one, the agent's keys come first and sshd gives up after MaxAuthTries (6): the
    // error says why and what to do.
    let inventory = server.sshd.inventory(|_| "worker", "", "  persist: 0\n");
    let key_line = format!("  identity_file: {}\n", server.sshd.user_key.display());
    std::fs::write(env.file("cluster.yaml"), inventory.replace(&key_line, "")).unwrap();
    let out = with_agent(&["plan", "execute", "--phase=/b"]).run().code(1);
    assert!(
        out.stdout.contains("Too many authentication failures")
            && out
                .stdout
                .contains("Set ssh.identity_file in the inventory"),
        "{}",
        out.stdout
    );
}
