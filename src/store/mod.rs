//! The state database (sled): operations, their immutable plans, phase records, the append-only
//! history, captured variables, phase logs, secrets and the executor lease.
//!
//! sled allows one process at a time (an exclusive file lock), so no process holds the database
//! open across slow work:
//! 1. Every access goes through [`Store::db`], which opens lazily and retries while another
//!    process holds the lock, announcing itself in a `wanted` file.
//! 2. The executor keeps the database open across quick in-process phases (a transition costs an
//!    insert and a flush, ~0.1 ms) and calls [`Store::release`] before slow actions.
//! 3. While it holds the database, it checks the `wanted` file every few milliseconds and steps
//!    aside for a waiting reader, so `medic plan` in another terminal is never stuck.
//! 4. Each change is one atomic batch, flushed before the call returns.
//!
//! A marker file beside the database records the format version; a database that is missing its
//! version while the marker exists is reported as damaged, never silently recreated. Format 2
//! ([`format`]) keeps records and history compact and each plan in its own tree (written once,
//! never beside keys that change); a version-1 database is migrated when opened ([`migrate`]).
//!
//! Files by concern: [`error`] (failures and exit codes), [`records`] (operations, history,
//! lease, commits), [`logs`] (chunked phase output, head and tail cap), [`lock`] (the holder
//! lock and the `wanted` handoff), [`identity`] (deleted or replaced state), [`open`] (sled's
//! open and the read copy), [`host`] (clock, names, processes).

mod error;
pub(crate) mod etcd;
mod format;
mod host;
mod identity;
mod lock;
mod logs;
mod migrate;
mod open;
mod records;
mod review;
mod stop;
#[cfg(test)]
mod tests;
mod transfer;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::action::Plan;
use crate::plan::{PhaseId, PhaseRecord};

pub use error::StoreError;
use error::{classify_io, classify_sled};
use format::{StoredActor, StoredEntry, StoredRecord};
use host::process_command;
pub(crate) use host::{
    format_time, hostname, now_ms, process_is_stopped, process_start_ticks, username,
};
use identity::{identity_of, Identity, Lost};
pub(crate) use logs::LOG_HEAD_BYTES;
pub use logs::{LogLine, OutputCap};
use logs::{StoredLog, LOG_CHUNK_LINES};
/// Unit tests elsewhere (the engine's) fake stale leases with it.
#[cfg(test)]
pub(crate) use records::LEASE_STALE_MS;
pub use records::{Access, Actor, Commit, HistoryEntry, Lease, Operation, OperationState};
pub(crate) use review::{Approval, ApprovalPolicy, Facts, Review};
pub(crate) use stop::StopRequest;
pub(crate) use transfer::migrate_operation;

pub(crate) const FORMAT_VERSION: u32 = 2;
const VERSION_KEY: &[u8] = b"format_version";
/// The sled tree holding each operation's plan under its ID (format 2).
const PLANS_TREE: &[u8] = b"plans";

pub struct Store {
    dir: PathBuf,
    access: Access,
    db: Option<sled::Db>,
    last_wanted_check: Instant,
    next_seq: HashMap<(String, &'static str), u64>,
    /// The number of each actor this store wrote, per operation (see [`format`]).
    actors: HashMap<(String, StoredActor), u64>,
    /// A deferred commit is written but not yet flushed.
    /// The state directory and data file as first opened; checked on every reopen and commit.
    identity: Option<Identity>,
    lost: Option<Lost>,
    /// A write failed: sled is unusable for this process (it can hang flushing after an
    /// I/O error), so every later access reports the same failure at once.
    poisoned: Option<StoreError>,
    /// A private copy being read because the state directory itself is not writable.
    read_copy: Option<PathBuf>,
    /// Commits since the database was last opened, and whether sled reclaims space in this
    /// process (see [`open`]: turned on once a hold has written many transitions).
    commits_since_open: u32,
    reclaim: bool,
    /// The etcd backend (`--state etcd://...`); when set, every method below goes there.
    etcd: Option<Box<etcd::EtcdStore>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.db = None;
        if let Some(copy) = self.read_copy.take() {
            let _ = std::fs::remove_dir_all(copy);
        }
    }
}

fn key(kind: &str, op: &str) -> Vec<u8> {
    format!("{kind}/{op}").into_bytes()
}

fn seq_key(kind: &str, op: &str, seq: u64) -> Vec<u8> {
    format!("{kind}/{op}/{seq:016x}").into_bytes()
}

fn decode<T: for<'de> Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(k).into_owned(),
        source,
    })
}

/// The sequence number at the end of a `kind/op/SEQ` key.
fn seq_of(hex: &[u8]) -> u64 {
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data always serializes")
}

impl Store {
    /// Opens the state database in `dir` for `access` and checks its format version. Only
    /// `medic start` (which creates an operation) uses [`Access::Create`].
    pub(crate) fn open_with(dir: &Path, access: Access) -> Result<Store, StoreError> {
        Store::open_on(dir, access, etcd::selected())
    }

    /// Opens the sled database in `dir`, or the etcd store `etcd` when given (what
    /// `medic state migrate` uses to open both ends whatever `--state` selected).
    pub(crate) fn open_on(
        dir: &Path,
        access: Access,
        etcd: Option<&etcd::EtcdConfig>,
    ) -> Result<Store, StoreError> {
        let etcd = match etcd {
            Some(config) => Some(Box::new(etcd::EtcdStore::open(config, access)?)),
            None => None,
        };
        if access == Access::Create && etcd.is_none() {
            create_state_dir(dir)?;
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            access,
            db: None,
            last_wanted_check: Instant::now(),
            next_seq: HashMap::new(),
            actors: HashMap::new(),
            identity: None,
            lost: None,
            poisoned: None,
            read_copy: None,
            commits_since_open: 0,
            reclaim: false,
            etcd,
        };
        if store.etcd.is_some() {
            return Ok(store);
        }
        store.db()?;
        if access != Access::Read {
            // The database holds secret parameter values (for resumes): owner only, even when
            // the state directory itself is shared (e.g. ./state in a checkout).
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(store.db_path(), std::fs::Permissions::from_mode(0o700));
        }
        Ok(store)
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("medic.db")
    }

    fn marker_path(&self) -> PathBuf {
        self.dir.join("medic.db.version")
    }

    fn wanted_path(&self) -> PathBuf {
        self.dir.join("medic.db.wanted")
    }

    /// sled's data file (the one it locks and writes).
    fn data_path(&self) -> PathBuf {
        self.db_path().join("db")
    }

    /// Closes the database so other processes can open it; the next access reopens it.
    pub(crate) fn release(&mut self) {
        if let Some(e) = &mut self.etcd {
            // As sled's flush here: a failure fails every later commit (see `settle`).
            let _ = e.settle();
            return;
        }
        if let Some(db) = self.db.take() {
            let _ = db.flush();
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        if self.etcd.is_some() {
            return true;
        }
        self.db.is_some()
    }

    /// Checks the format version, migrating a version-1 database to this one. A read copy
    /// (see [`Store::open_read_copy`]) is checked and migrated too, but leaves no marker.
    fn check_version(&self, db: &sled::Db) -> Result<(), StoreError> {
        let marker = std::fs::read_to_string(self.marker_path()).ok();
        let own_files = self.read_copy.is_none();
        match db.get(VERSION_KEY)? {
            Some(v) => {
                let found = String::from_utf8_lossy(&v).into_owned();
                if found == "1" {
                    migrate::from_v1(db).map_err(|e| match e {
                        StoreError::Sled(e) => classify_sled(&self.dir, e),
                        other => other,
                    })?;
                } else if found != FORMAT_VERSION.to_string() {
                    return Err(StoreError::UnknownVersion {
                        path: self.db_path(),
                        found,
                    });
                }
                if own_files && marker.as_deref() != Some(&FORMAT_VERSION.to_string()) {
                    let _ = std::fs::write(self.marker_path(), FORMAT_VERSION.to_string());
                }
                Ok(())
            }
            None if marker.is_some() || !db.is_empty() => Err(StoreError::Damaged {
                path: self.db_path(),
                detail: "its format version record is missing".to_string(),
            }),
            // An empty database this store did not create: nothing to read, nothing to write.
            None if self.access == Access::Read => Ok(()),
            None => {
                db.insert(VERSION_KEY, FORMAT_VERSION.to_string().as_bytes())?;
                db.flush()?;
                let _ = std::fs::write(self.marker_path(), FORMAT_VERSION.to_string());
                Ok(())
            }
        }
    }

    pub(crate) fn operations(&mut self) -> Result<Vec<Operation>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.operations();
        }
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.scan_prefix(b"op/") {
            let (k, v) = item?;
            out.push(decode::<Operation>(&k, &v)?);
        }
        out.sort_by_key(|o| o.created_at);
        Ok(out)
    }

    pub(crate) fn operation(&mut self, id: &str) -> Result<Operation, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.operation(id);
        }
        let k = key("op", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Err(StoreError::NoOperation(id.to_string())),
        }
    }

    pub(crate) fn plan(&mut self, id: &str) -> Result<Plan, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.plan(id);
        }
        let k = key("plan", id);
        match self.db()?.open_tree(PLANS_TREE)?.get(id.as_bytes())? {
            Some(v) => Plan::from_json(&v).map_err(|source| StoreError::Decode {
                key: String::from_utf8_lossy(&k).into_owned(),
                source,
            }),
            None => Err(StoreError::NoOperation(id.to_string())),
        }
    }

    pub(crate) fn records(
        &mut self,
        id: &str,
    ) -> Result<HashMap<PhaseId, PhaseRecord>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.records(id);
        }
        let prefix = format!("ph/{id}/");
        let db = self.db()?;
        let mut out = HashMap::new();
        for item in db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let phase = String::from_utf8_lossy(&k[prefix.len()..]);
            let record: StoredRecord = decode(&k, &v)?;
            out.insert(PhaseId::parse(&phase), record.into());
        }
        Ok(out)
    }

    pub(crate) fn vars(
        &mut self,
        id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.vars(id);
        }
        let k = key("vars", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Ok(serde_json::Map::new()),
        }
    }

    pub(crate) fn secrets(&mut self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.secrets(id);
        }
        let k = key("secret", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Ok(BTreeMap::new()),
        }
    }

    pub(crate) fn lease(&mut self, id: &str) -> Result<Option<Lease>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.lease(id);
        }
        let k = key("lease", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn history(&mut self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.history(id);
        }
        let db = self.db()?;
        let actor_prefix = format!("actor/{id}/");
        let mut actors = HashMap::new();
        for item in db.scan_prefix(actor_prefix.as_bytes()) {
            let (k, v) = item?;
            let n = seq_of(&k[actor_prefix.len()..]);
            actors.insert(n, decode::<StoredActor>(&k, &v)?);
        }
        let prefix = format!("hist/{id}/");
        let mut out = Vec::new();
        for item in db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let entry: StoredEntry = decode(&k, &v)?;
            let actor = actors.get(&entry.actor());
            out.push(entry.into_entry(seq_of(&k[prefix.len()..]), actor));
        }
        Ok(out)
    }

    fn next_seq(&mut self, kind: &'static str, op: &str) -> Result<u64, StoreError> {
        let cache_key = (op.to_string(), kind);
        if let Some(n) = self.next_seq.get(&cache_key) {
            return Ok(*n);
        }
        let prefix = format!("{kind}/{op}/");
        let last = self
            .db()?
            .scan_prefix(prefix.as_bytes())
            .next_back()
            .transpose()?;
        let next = match last {
            Some((k, _)) => seq_of(&k[prefix.len()..]) + 1,
            None => 0,
        };
        Ok(next)
    }

    /// Writes `commit` for operation `op` as one atomic batch and flushes it to disk.
    pub(crate) fn commit(&mut self, op: &str, mut commit: Commit) -> Result<(), StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.commit(op, commit);
        }
        if commit.is_empty() {
            return Ok(());
        }
        if self.read_copy.is_some() {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
        }
        let mut hist_seq = self.next_seq("hist", op)?;
        let mut log_seq = self.next_seq("log", op)?;
        let mut actor_seq = self.next_seq("actor", op)?;
        let mut new_actors = Vec::new();
        let mut batch = sled::Batch::default();
        if let Some(o) = &commit.operation {
            batch.insert(key("op", op), encode(o));
        }
        if let Some(p) = &commit.plan {
            // Its own tree: the plan is never rewritten with the records that change beside
            // it. Written before the batch (an orphan plan is harmless), flushed with it.
            let written = self
                .db()?
                .open_tree(PLANS_TREE)
                .and_then(|t| t.insert(op.as_bytes(), p.as_slice()));
            if let Err(e) = written {
                return Err(self.write_failure(e));
            }
        }
        if let Some(s) = &commit.secrets {
            batch.insert(key("secret", op), encode(s));
        }
        for (phase, record) in &commit.records {
            batch.insert(
                format!("ph/{op}/{phase}").into_bytes(),
                encode(&StoredRecord::from(record)),
            );
        }
        for entry in &mut commit.history {
            entry.seq = hist_seq;
            let actor = StoredActor::of(entry);
            let cache_key = (op.to_string(), actor);
            let n = match self.actors.get(&cache_key) {
                Some(n) => *n,
                None => {
                    let n = actor_seq;
                    actor_seq += 1;
                    batch.insert(seq_key("actor", op, n), encode(&cache_key.1));
                    self.actors.insert(cache_key.clone(), n);
                    new_actors.push(cache_key);
                    n
                }
            };
            batch.insert(
                seq_key("hist", op, hist_seq),
                encode(&StoredEntry::of(entry, n)),
            );
            hist_seq += 1;
        }
        if let Some(v) = &commit.vars {
            batch.insert(key("vars", op), encode(v));
        }
        for chunk in commit
            .logs
            .chunk_by(|a, b| a.phase == b.phase)
            .flat_map(|same_phase| same_phase.chunks(LOG_CHUNK_LINES))
        {
            let stored = StoredLog::Chunk {
                phase: chunk[0].phase.clone(),
                lines: chunk
                    .iter()
                    .map(|l| (l.time, l.stream, l.text.clone()))
                    .collect(),
            };
            batch.insert(seq_key("log", op, log_seq), encode(&stored));
            log_seq += 1;
        }
        match &commit.lease {
            Some(Some(lease)) => batch.insert(key("lease", op), encode(lease)),
            Some(None) => batch.remove(key("lease", op)),
            None => {}
        }
        let db = self.db()?;
        let written = db.apply_batch(batch).and_then(|()| {
            if commit.defer_flush {
                Ok(())
            } else {
                db.flush().map(|_| ())
            }
        });
        if let Err(e) = written {
            // Not written: the next commit writes these actors again.
            for k in new_actors {
                self.actors.remove(&k);
            }
            return Err(self.write_failure(e));
        }
        // Written into the files this store opened: make sure they are still the state
        // directory's (a deleted directory's open files accept writes that nobody will read).
        self.verify_identity()?;
        self.next_seq.insert((op.to_string(), "hist"), hist_seq);
        self.next_seq.insert((op.to_string(), "log"), log_seq);
        self.next_seq.insert((op.to_string(), "actor"), actor_seq);
        self.note_commit()
    }
}

/// Creates the state directory, owner only (the database holds secret parameter values);
/// missing parents get the usual mode.
fn create_state_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(err(e)),
    }
}
