//! The etcd backend's transactions against a real etcd member (Debian's etcd-server, started
//! here on free loopback ports): two stores taking one lease, a lost lease, a lease-less
//! writer between an executor's commits.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{EtcdConfig, EtcdStore, EtcdStoreError};
use crate::store::{Access, Actor, Commit, HistoryEntry, Lease, Store, StoreError};

struct Member {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_member() -> Member {
    let dir = tempfile::tempdir().unwrap();
    let (port, peer) = (free_port(), free_port());
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        .arg("--log-level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (install etcd-server)");
    let member = Member {
        child,
        _dir: dir,
        port,
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "etcd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    member
}

fn open(member: &Member, ttl: u64) -> Store {
    let mut config =
        EtcdConfig::parse(&format!("etcd://127.0.0.1:{}/t", member.port), false).unwrap();
    config.lease_ttl = Duration::from_secs(ttl);
    Store::open_on(
        std::path::Path::new("/nonexistent"),
        Access::Write,
        Some(&config),
    )
    .unwrap()
}

fn actor(pid: u32) -> Actor {
    Actor {
        user: "u".into(),
        host: format!("host-{pid}"),
        pid,
        command: "medic plan resume".into(),
    }
}

fn lease(pid: u32) -> Lease {
    Lease {
        pid,
        host: format!("host-{pid}"),
        user: "u".into(),
        started_at: 1,
        heartbeat_at: 1,
        proc_start: None,
        command: "medic plan resume".into(),
        store_alive: None,
    }
}

fn acquire(store: &mut Store, pid: u32) -> Result<(), StoreError> {
    store.commit(
        "op",
        Commit {
            lease: Some(Some(lease(pid))),
            history: vec![HistoryEntry::new("lease_acquired", &actor(pid), None)],
            ..Default::default()
        },
    )
}

fn note(store: &mut Store, pid: u32, event: &str) -> Result<(), StoreError> {
    store.commit(
        "op",
        Commit {
            history: vec![HistoryEntry::new(event, &actor(pid), None)],
            ..Default::default()
        },
    )
}

fn backend(store: &mut Store) -> &mut EtcdStore {
    store.etcd.as_mut().expect("an etcd store")
}

#[test]
fn one_lease_two_executors_a_lost_lease_and_a_lease_less_writer() {
    let member = start_member();
    let (mut a, mut b) = (open(&member, 5), open(&member, 5));
    // Both saw nobody holding the lease; only the first to commit gets it.
    assert_eq!(a.lease("op").unwrap(), None);
    assert_eq!(b.lease("op").unwrap(), None);
    acquire(&mut a, 1).unwrap();
    match acquire(&mut b, 2) {
        Err(StoreError::Etcd(EtcdStoreError::LeaseHeld { holder, .. })) => {
            assert!(holder.contains("pid 1"), "{holder}")
        }
        other => panic!("second acquire: {other:?}"),
    }
    let seen = b.lease("op").unwrap().unwrap();
    assert_eq!((seen.pid, seen.store_alive), (1, Some(true)));
    // A lease-less writer (an approval) between the executor's commits: the executor's next
    // commit reads the moved head and goes on; the history has no gap.
    note(&mut b, 2, "approved").unwrap();
    note(&mut a, 1, "start").unwrap();
    // The etcd lease revoked behind the executor's back (as if it expired): its next commit
    // is refused and writes nothing.
    let id = backend(&mut a).held["op"].lease_id;
    backend(&mut b)
        .call(
            "revoke",
            move |mut c| async move { c.lease_revoke(id).await },
        )
        .unwrap();
    match note(&mut a, 1, "complete") {
        Err(StoreError::Etcd(EtcdStoreError::LeaseLost { .. })) => {}
        other => panic!("commit after the lease was lost: {other:?}"),
    }
    assert!(matches!(
        a.lease("op"),
        Err(StoreError::Etcd(EtcdStoreError::LeaseLost { .. }))
    ));
    let events: Vec<(u64, String)> = b
        .history("op")
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.event))
        .collect();
    let expected = [(0, "lease_acquired"), (1, "approved"), (2, "start")];
    let expected: Vec<(u64, String)> = expected.iter().map(|(s, e)| (*s, e.to_string())).collect();
    assert_eq!(events, expected);
    // The dead holder is still named, as dead, for the takeover.
    let dead = b.lease("op").unwrap().unwrap();
    assert_eq!((dead.pid, dead.store_alive), (1, Some(false)));
    acquire(&mut b, 2).unwrap();
}
