//! The etcd state backend: the same operations, plans, records, history, logs, secrets, lease,
//! stop requests and reviews as the sled store, kept in a management etcd so a team shares one
//! view and a teammate on another machine can take over (`--state etcd://...`).
//!
//! 1. [`select`] is called once by the CLI with the parsed `--state`; `Store::open_with` then
//!    opens an [`EtcdStore`] instead of sled, so the engine never knows which it has.
//! 2. etcd-client is async and `Store` is sync: the backend owns a one-worker tokio runtime of
//!    its own and waits for each call on a channel ([`EtcdStore::call`]), which works from plain
//!    threads and from inside the engine's runtime alike (no `block_on` inside a runtime).
//! 3. Every commit is one etcd transaction ([`commit`]) comparing the operation's head revision
//!    and, for an executor, its lease key; the executor lease is an etcd lease kept alive in the
//!    background ([`keepalive`]). Readers see a phase in progress as interrupted once its lease
//!    key is gone: no pid checks across machines.
//! 4. Secret values are sealed with a key from a local file ([`crypt`]), never stored in etcd.
//!
//! Keys under the prefix `P` (default `/medic/`): `P/op/OP`, `P/plan/OP`, `P/ph/OP/PHASE`,
//! `P/head/OP` (next history and log numbers), `P/hist/OP/SEQ`, `P/log/OP/SEQ`, `P/vars/OP`,
//! `P/secret/OP`, `P/lease/OP` (attached to the etcd lease), `P/holder/OP` (the last holder,
//! kept after it dies so the takeover can name it), `P/stop/OP`, `P/review/OP`.

mod commit;
pub(crate) mod crypt;
pub(crate) mod error;
mod keepalive;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use super::logs::{LogLine, StoredLog};
use super::{Access, HistoryEntry, Lease, Operation, Review, StopRequest, StoreError};
use crate::action::Plan;
use crate::plan::{PhaseId, PhaseRecord};
use crypt::StateKey;
pub use error::EtcdStoreError;

/// A key and its value as read from etcd.
type KeyAndValue = (Vec<u8>, Vec<u8>);

/// How long one call to etcd may take before the store counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The executor lease's default time to live.
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// Where the team's state lives: `--state etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Clone, Debug)]
pub(crate) struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    /// Ends with `/`.
    pub(crate) prefix: String,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) lease_ttl: Duration,
}

impl EtcdConfig {
    /// Parses `url`; endpoints use https when a CA or client certificate is given.
    pub(crate) fn parse(url: &str, tls: bool) -> Result<EtcdConfig, EtcdStoreError> {
        let bad = |why: &str| EtcdStoreError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("it does not start with etcd://"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, p.trim_matches('/')),
            None => (rest, ""),
        };
        let scheme = if tls { "https" } else { "http" };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("endpoint `{host}` has no :PORT")))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad(&format!("endpoint `{host}` is not HOST:PORT")));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the prefix holds spaces or control characters"));
        }
        let prefix = if prefix.is_empty() {
            "/medic/".to_string()
        } else {
            format!("/{prefix}/")
        };
        Ok(EtcdConfig {
            endpoints,
            prefix,
            ca: None,
            cert: None,
            key: None,
            key_file: None,
            lease_ttl: DEFAULT_LEASE_TTL,
        })
    }
}

static SELECTED: OnceLock<EtcdConfig> = OnceLock::new();

/// Makes every store this process opens an etcd store on `config` (the CLI's `--state`).
pub(crate) fn select(config: EtcdConfig) {
    let _ = SELECTED.set(config);
}

/// The etcd store selected for this process, if any.
pub(crate) fn selected() -> Option<&'static EtcdConfig> {
    SELECTED.get()
}

/// What this store holds for an operation it executes: its etcd lease.
struct Held {
    lease_id: i64,
    lost: Arc<AtomicBool>,
    keepalive: tokio::task::JoinHandle<()>,
}

/// The next history and log numbers of an operation and the revision they were read at.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Head {
    #[serde(rename = "h")]
    hist: u64,
    #[serde(rename = "l")]
    log: u64,
    /// A random mark of the commit that wrote it, so a commit made again after a lost answer
    /// recognises its own write instead of writing it twice.
    #[serde(rename = "w", default)]
    writer: u64,
    #[serde(skip)]
    mod_revision: i64,
}

/// The backend's own runtime, shut down without waiting when dropped: a store may be dropped
/// inside the engine's runtime, where waiting for another runtime's threads would panic.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) struct EtcdStore {
    /// Still running while `Drop for EtcdStore` revokes leases (fields drop after it).
    _runtime: OwnRuntime,
    handle: tokio::runtime::Handle,
    client: Client,
    config: EtcdConfig,
    state_key: Option<StateKey>,
    held: HashMap<String, Held>,
    heads: HashMap<String, Head>,
    /// A deferred commit not yet written (see `EtcdStore::commit`).
    deferred: Option<(String, super::Commit)>,
    /// Why writing a held commit failed; every later commit fails with it.
    settle_failed: Option<String>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        let _ = self.settle();
        // A lease this process still holds (it failed, or lost the store): revoke it so a
        // teammate can resume at once rather than after the TTL; best effort.
        let ids: Vec<i64> = self.held.values().map(|h| h.lease_id).collect();
        for id in ids {
            let _ = self.call_with(
                Duration::from_secs(1),
                "revoke lease",
                move |mut c| async move { c.lease_revoke(id).await },
            );
        }
    }
}

fn read_tls(path: &PathBuf) -> Result<Vec<u8>, EtcdStoreError> {
    std::fs::read(path).map_err(|source| EtcdStoreError::ReadTls {
        path: path.clone(),
        source,
    })
}

/// Blocks SIGPIPE in the backend's own threads. A read command keeps SIGPIPE's default (so
/// `medic plan | head` ends quietly), and a vectored write (`writev`, which takes no
/// `MSG_NOSIGNAL`) to a connection etcd has closed — e.g. refusing a TLS client without a
/// certificate — would otherwise kill medic with no message. Blocked in the writing thread,
/// the signal stays pending and the write fails with EPIPE, which the client reports. These
/// threads start no child process, so no child inherits the mask.
fn block_sigpipe() {
    // SAFETY: plain libc calls on a local, initialised signal set; affects this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl EtcdStore {
    pub(crate) fn open(config: &EtcdConfig, _access: Access) -> Result<EtcdStore, StoreError> {
        let runtime = OwnRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("medic-etcd-state")
                .on_thread_start(block_sigpipe)
                .enable_all()
                .build()
                .map_err(|e| EtcdStoreError::Connect {
                    endpoints: config.endpoints.join(","),
                    detail: e.to_string(),
                })?,
        ));
        let handle = runtime.0.as_ref().expect("just built").handle().clone();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        if config.ca.is_some() || config.cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read_tls(ca)?));
            }
            if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
                tls = tls.identity(Identity::from_pem(read_tls(cert)?, read_tls(key)?));
            }
            options = options.with_tls(tls);
        }
        let endpoints = config.endpoints.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let connected = Client::connect(endpoints, Some(options));
            let r = tokio::time::timeout(CALL_TIMEOUT, connected).await;
            let _ = tx.send(r);
        });
        let connect_error = |detail: String| EtcdStoreError::Connect {
            endpoints: config.endpoints.join(","),
            detail,
        };
        let client = match rx.recv() {
            Ok(Ok(Ok(c))) => c,
            Ok(Ok(Err(e))) => return Err(connect_error(e.to_string()).into()),
            Ok(Err(_)) => return Err(connect_error("no answer".into()).into()),
            Err(_) => return Err(connect_error("the client stopped".into()).into()),
        };
        let state_key = match &config.key_file {
            Some(path) => Some(StateKey::load_or_create(path)?),
            None => None,
        };
        let store = EtcdStore {
            handle,
            _runtime: runtime,
            client,
            config: config.clone(),
            state_key,
            held: HashMap::new(),
            heads: HashMap::new(),
            deferred: None,
            settle_failed: None,
        };
        // Connecting is lazy: ask for something (of any endpoint that answers) so that an
        // unreachable store fails here, before anything else.
        store
            .call("connect", |mut c| async move {
                c.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .map_err(|e| match e {
                EtcdStoreError::Unavailable { detail, .. } => connect_error(detail),
                other => other,
            })?;
        Ok(store)
    }

    /// Runs the call `make` builds on the backend's runtime and waits for it (see the module
    /// comment). A call that fails before etcd could act on it (an endpoint down, no leader)
    /// is made again, on a fresh attempt, until [`CALL_TIMEOUT`]: with several endpoints, the
    /// client's balancer may pick a dead member first.
    fn call<T, F, M>(&self, what: &'static str, make: M) -> Result<T, EtcdStoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        M: Fn(Client) -> F + Send + 'static,
    {
        self.call_with(CALL_TIMEOUT, what, make)
    }

    fn call_with<T, F, M>(
        &self,
        timeout: Duration,
        what: &'static str,
        make: M,
    ) -> Result<T, EtcdStoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        M: Fn(Client) -> F + Send + 'static,
    {
        let client = self.client.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut delay = Duration::from_millis(20);
            let result = loop {
                match tokio::time::timeout_at(deadline, make(client.clone())).await {
                    Err(_) => break Err(None),
                    Ok(Ok(v)) => break Ok(v),
                    Ok(Err(e))
                        if is_transient(&e) && tokio::time::Instant::now() + delay < deadline =>
                    {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(400));
                    }
                    Ok(Err(e)) => break Err(Some(e)),
                }
            };
            let _ = tx.send(result);
        });
        let unavailable = |detail: String| EtcdStoreError::Unavailable {
            endpoints: self.config.endpoints.join(","),
            what,
            detail,
        };
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Some(e))) => Err(unavailable(e.to_string())),
            Ok(Err(None)) => Err(unavailable(format!("no answer in {}s", timeout.as_secs()))),
            Err(_) => Err(unavailable("the client stopped".into())),
        }
    }

    fn key(&self, kind: &str, op: &str) -> String {
        format!("{}{kind}/{op}", self.config.prefix)
    }

    /// One value, if present.
    fn get(&self, key: String) -> Result<Option<Vec<u8>>, EtcdStoreError> {
        let mut resp = self.call("read", move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.value().to_vec()))
    }

    /// Every key and value under `prefix`, in key order, read in pages (bounded memory per
    /// call), from `after` (exclusive) on, stopping once `max` values were read.
    fn range(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Vec<KeyAndValue>, EtcdStoreError> {
        const PAGE: i64 = 500;
        let end = prefix_end(prefix.as_bytes());
        let mut start = match after {
            Some(k) => [k, b"\0"].concat(),
            None => prefix.as_bytes().to_vec(),
        };
        let mut out = Vec::new();
        loop {
            let (s, e) = (start.clone(), end.clone());
            let mut resp = self.call("read", move |mut c| {
                let (s, e) = (s.clone(), e.clone());
                async move {
                    c.get(s, Some(GetOptions::new().with_range(e).with_limit(PAGE)))
                        .await
                }
            })?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            let n = kvs.len();
            for kv in kvs {
                start = [kv.key(), b"\0"].concat();
                out.push((kv.key().to_vec(), kv.value().to_vec()));
            }
            if !more || n == 0 || out.len() >= max {
                return Ok(out);
            }
        }
    }

    pub(crate) fn operations(&mut self) -> Result<Vec<Operation>, StoreError> {
        self.settle()?;
        let prefix = format!("{}op/", self.config.prefix);
        let mut out = Vec::new();
        for (k, v) in self.range(&prefix, None, usize::MAX)? {
            out.push(decode::<Operation>(&k, &v)?);
        }
        out.sort_by_key(|o| o.created_at);
        Ok(out)
    }

    pub(crate) fn operation(&mut self, id: &str) -> Result<Operation, StoreError> {
        self.settle()?;
        let k = self.key("op", id);
        match self.get(k.clone())? {
            Some(v) => Ok(decode(k.as_bytes(), &v)?),
            None => Err(StoreError::NoOperation(id.to_string())),
        }
    }

    pub(crate) fn plan(&mut self, id: &str) -> Result<Plan, StoreError> {
        self.settle()?;
        let k = self.key("plan", id);
        match self.get(k.clone())? {
            Some(v) => Plan::from_json(&v).map_err(|source| StoreError::Decode { key: k, source }),
            None => Err(StoreError::NoOperation(id.to_string())),
        }
    }

    pub(crate) fn records(
        &mut self,
        id: &str,
    ) -> Result<HashMap<PhaseId, PhaseRecord>, StoreError> {
        self.settle()?;
        let prefix = format!("{}ph/{id}/", self.config.prefix);
        let mut out = HashMap::new();
        for (k, v) in self.range(&prefix, None, usize::MAX)? {
            let phase = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.insert(PhaseId::parse(&phase), decode(&k, &v)?);
        }
        Ok(out)
    }

    pub(crate) fn vars(
        &mut self,
        id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        self.settle()?;
        let k = self.key("vars", id);
        match self.get(k.clone())? {
            Some(v) => Ok(decode(k.as_bytes(), &v)?),
            None => Ok(serde_json::Map::new()),
        }
    }

    pub(crate) fn secrets(&mut self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.settle()?;
        let k = self.key("secret", id);
        let Some(sealed) = self.get(k.clone())? else {
            return Ok(BTreeMap::new());
        };
        let key = self
            .state_key
            .as_ref()
            .ok_or_else(|| EtcdStoreError::NoKeyFile {
                operation: id.to_string(),
            })?;
        let plain = key.open(id, &sealed)?;
        Ok(decode(k.as_bytes(), &plain)?)
    }

    /// The lease: the live holder while its etcd lease lasts; after it expired, the last
    /// holder, marked dead (so a takeover names it); `None` if released cleanly.
    pub(crate) fn lease(&mut self, id: &str) -> Result<Option<Lease>, StoreError> {
        self.settle()?;
        self.check_held(id)?;
        let k = self.key("lease", id);
        if let Some(v) = self.get(k.clone())? {
            let mut lease: Lease = decode(k.as_bytes(), &v)?;
            lease.store_alive = Some(true);
            return Ok(Some(lease));
        }
        let k = self.key("holder", id);
        match self.get(k.clone())? {
            Some(v) => {
                let mut lease: Lease = decode(k.as_bytes(), &v)?;
                lease.store_alive = Some(false);
                Ok(Some(lease))
            }
            None => Ok(None),
        }
    }

    /// Fails if this store held the lease of `op` and lost it.
    fn check_held(&self, op: &str) -> Result<(), EtcdStoreError> {
        match self.held.get(op) {
            Some(h) if h.lost.load(Ordering::SeqCst) => Err(EtcdStoreError::LeaseLost {
                operation: op.to_string(),
                ttl_secs: self.config.lease_ttl.as_secs(),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn history(&mut self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.settle()?;
        let prefix = format!("{}hist/{id}/", self.config.prefix);
        let mut out = Vec::new();
        for (k, v) in self.range(&prefix, None, usize::MAX)? {
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    pub(crate) fn logs_after(
        &mut self,
        id: &str,
        after: Option<&[u8]>,
        max_lines: usize,
    ) -> Result<(Vec<LogLine>, Option<Vec<u8>>), StoreError> {
        self.settle()?;
        let prefix = format!("{}log/{id}/", self.config.prefix);
        // A chunk holds at most LOG_CHUNK_LINES lines: read that many chunks at most.
        let chunks = self.range(&prefix, after, max_lines.div_ceil(64).max(1))?;
        let mut out = Vec::new();
        for (k, v) in chunks {
            decode::<StoredLog>(&k, &v)?.append_to(&mut out);
            if out.len() >= max_lines {
                return Ok((out, Some(k)));
            }
        }
        Ok((out, None))
    }

    pub(crate) fn request_stop(
        &mut self,
        op: &str,
        request: &StopRequest,
    ) -> Result<(), StoreError> {
        self.put_plain(self.key("stop", op), super::encode(request))
    }

    pub(crate) fn stop_request(&mut self, op: &str) -> Result<Option<StopRequest>, StoreError> {
        self.settle()?;
        let k = self.key("stop", op);
        match self.get(k.clone())? {
            Some(v) => Ok(Some(decode(k.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn review(&mut self, op: &str) -> Result<Review, StoreError> {
        self.settle()?;
        let k = self.key("review", op);
        match self.get(k.clone())? {
            Some(v) => Ok(decode(k.as_bytes(), &v)?),
            None => Ok(Review::default()),
        }
    }

    pub(crate) fn put_review(&mut self, op: &str, review: &Review) -> Result<(), StoreError> {
        self.put_plain(self.key("review", op), super::encode(review))
    }

    fn put_plain(&self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        self.call("write", move |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })?;
        Ok(())
    }
}

/// Whether `e` failed the call before etcd acted on it, so that making it again is safe: the
/// endpoint could not be reached, or etcd answered UNAVAILABLE (no leader, shutting down).
/// (A commit made twice is recognised by its writer mark: see `commit.rs`.)
fn is_transient(e: &etcd_client::Error) -> bool {
    /// gRPC's UNAVAILABLE.
    const UNAVAILABLE: i32 = 14;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => i32::from(status.code()) == UNAVAILABLE,
        _ => false,
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn decode<T: for<'de> serde::Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<T, EtcdStoreError> {
    serde_json::from_slice(v).map_err(|e| EtcdStoreError::Decode {
        key: String::from_utf8_lossy(k).into_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn parses_state_urls() {
        let c = EtcdConfig::parse("etcd://a:2379,b:2380/team/x", false).unwrap();
        assert_eq!(c.endpoints, ["http://a:2379", "http://b:2380"]);
        assert_eq!(c.prefix, "/team/x/");
        let c = EtcdConfig::parse("etcd://127.0.0.1:2379", true).unwrap();
        assert_eq!(c.endpoints, ["https://127.0.0.1:2379"]);
        assert_eq!(c.prefix, "/medic/");
        for bad in [
            "http://a:1",
            "etcd://a",
            "etcd://a:x",
            "etcd://:1",
            "etcd://a:1/b c",
        ] {
            assert!(EtcdConfig::parse(bad, false).is_err(), "{bad}");
        }
        assert_eq!(prefix_end(b"/m/"), b"/m0");
    }
}
