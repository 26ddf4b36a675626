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
//! version while the marker exists is reported as damaged, never silently recreated.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::action::Stream;
use crate::plan::{PhaseId, PhaseRecord, PhaseState, Plan};

pub const FORMAT_VERSION: u32 = 1;
const VERSION_KEY: &[u8] = b"format_version";
/// How long a process waits for another one to let go of the database.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How often a holder looks for waiters.
const WANTED_CHECK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("open state database {path}: it stayed locked by another medic process for {secs}s")]
    Locked { path: PathBuf, secs: u64 },
    #[error("open state database {path}: it is damaged ({detail}); nothing was changed. Restore {path} from a backup or move it aside to start afresh")]
    Damaged { path: PathBuf, detail: String },
    #[error("open state database {path}: format version {found} is not supported by this medic (it reads version {FORMAT_VERSION}); use the medic release that wrote it")]
    UnknownVersion { path: PathBuf, found: String },
    #[error("state database: {0}")]
    Sled(#[from] sled::Error),
    #[error("state database holds a record it cannot read ({key}): {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    #[error("no operation `{0}`; run `medic operations` to list them")]
    NoOperation(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Active,
    Completed,
    Failed,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Active => "active",
            OperationState::Completed => "completed",
            OperationState::Failed => "failed",
        }
    }
}

/// Who did something, from where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The command line, with secret values redacted.
    pub command: String,
}

/// One run of a procedure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub procedure: String,
    pub description: String,
    /// Parameter values; secret ones are not here (only their names, in `secret_params`).
    pub params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub secret_params: Vec<String>,
    pub created_at: u64,
    pub created_by: Actor,
    #[serde(default)]
    pub reason: Option<String>,
    pub state: OperationState,
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// sha256 of the plan's canonical JSON.
    pub fingerprint: String,
}

/// An entry of the append-only history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(default)]
    pub seq: u64,
    pub time: u64,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PhaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PhaseState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PhaseState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One line of a phase's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub time: u64,
    pub phase: PhaseId,
    pub stream: Stream,
    pub text: String,
}

/// Who is executing an operation now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub started_at: u64,
    pub heartbeat_at: u64,
    /// The holder's start time in clock ticks since boot, so a reused pid is not mistaken for it.
    #[serde(default)]
    pub proc_start: Option<u64>,
    pub command: String,
}

/// A lease on another host counts as dead after this long without a heartbeat.
pub const LEASE_STALE_MS: u64 = 60_000;

impl Lease {
    pub fn is_alive(&self) -> bool {
        if self.host == hostname() {
            match process_start_ticks(self.pid) {
                Some(start) => self.proc_start.is_none_or(|s| s == start),
                None => false,
            }
        } else {
            now_ms().saturating_sub(self.heartbeat_at) < LEASE_STALE_MS
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "pid {} on {} (user {}, since {}, last heartbeat {}): {}",
            self.pid,
            self.host,
            self.user,
            format_time(self.started_at),
            format_time(self.heartbeat_at),
            self.command
        )
    }
}

/// A set of changes written as one atomic, flushed batch.
#[derive(Default, Debug)]
pub struct Commit {
    pub operation: Option<Operation>,
    pub plan: Option<Vec<u8>>,
    pub secrets: Option<BTreeMap<String, String>>,
    pub records: Vec<(PhaseId, PhaseRecord)>,
    pub history: Vec<HistoryEntry>,
    pub vars: Option<serde_json::Map<String, serde_json::Value>>,
    pub logs: Vec<LogLine>,
    /// `Some(None)` clears the lease.
    pub lease: Option<Option<Lease>>,
    /// Written now but flushed with the next commit (or on release) instead of at once. Used
    /// for the end of a phase: the next phase's start flushes it before that phase's action
    /// runs, which halves the flushes of a run without weakening what is durable when.
    pub defer_flush: bool,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.operation.is_none()
            && self.plan.is_none()
            && self.secrets.is_none()
            && self.records.is_empty()
            && self.history.is_empty()
            && self.vars.is_none()
            && self.logs.is_empty()
            && self.lease.is_none()
    }

    /// Writes the same changes, but flushes them only with the next commit or on release.
    pub fn deferred(self) -> Self {
        Commit {
            defer_flush: true,
            ..self
        }
    }
}

pub struct Store {
    dir: PathBuf,
    db: Option<sled::Db>,
    last_wanted_check: Instant,
    next_seq: HashMap<(String, &'static str), u64>,
    /// A deferred commit is written but not yet flushed.
    unflushed: bool,
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

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data always serializes")
}

impl Store {
    /// Opens (creating if needed) the state database in `dir` and checks its format version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if created {
            // The database holds secret parameter values (for resumes): owner only.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            db: None,
            last_wanted_check: Instant::now(),
            next_seq: HashMap::new(),
            unflushed: false,
        };
        store.db()?;
        // The database holds secret parameter values (for resumes): owner only, even when the
        // state directory itself is shared (e.g. ./state in a checkout).
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(store.db_path(), std::fs::Permissions::from_mode(0o700));
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Closes the database so other processes can open it; the next access reopens it.
    pub fn release(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = db.flush();
            self.unflushed = false;
        }
    }

    /// Makes any deferred commit durable now.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.unflushed {
            if let Some(db) = &self.db {
                db.flush()?;
            }
            self.unflushed = false;
        }
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.db.is_some()
    }

    /// The open database, opening it if needed, and stepping aside first if a waiter asked.
    pub fn db(&mut self) -> Result<&sled::Db, StoreError> {
        if self.db.is_some() && self.last_wanted_check.elapsed() >= WANTED_CHECK {
            self.last_wanted_check = Instant::now();
            if self.someone_waits() {
                self.release();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.db.is_none() {
            let db = self.open_db()?;
            self.db = Some(db);
            self.last_wanted_check = Instant::now();
        }
        Ok(self.db.as_ref().expect("opened above"))
    }

    /// Closes the database if another process is waiting for it; returns whether it did.
    pub fn yield_to_waiters(&mut self) -> bool {
        if self.db.is_some() && self.someone_waits() {
            self.release();
            return true;
        }
        false
    }

    fn someone_waits(&self) -> bool {
        match std::fs::metadata(self.wanted_path()).and_then(|m| m.modified()) {
            Ok(modified) => SystemTime::now()
                .duration_since(modified)
                .map(|age| age < Duration::from_secs(5))
                .unwrap_or(true),
            Err(_) => false,
        }
    }

    fn open_db(&self) -> Result<sled::Db, StoreError> {
        let path = self.db_path();
        let started = Instant::now();
        let mut delay = Duration::from_millis(1);
        loop {
            match open_catching_panics(&path) {
                Ok(db) => {
                    let _ = std::fs::remove_file(self.wanted_path());
                    self.check_version(&db)?;
                    return Ok(db);
                }
                Err(OpenFailure::Locked) => {
                    if started.elapsed() > LOCK_WAIT {
                        return Err(StoreError::Locked {
                            path,
                            secs: LOCK_WAIT.as_secs(),
                        });
                    }
                    // Touch the wanted file so the holder steps aside.
                    let _ = std::fs::write(self.wanted_path(), std::process::id().to_string());
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(8));
                }
                Err(OpenFailure::Damaged(detail)) => {
                    return Err(StoreError::Damaged { path, detail })
                }
            }
        }
    }

    fn check_version(&self, db: &sled::Db) -> Result<(), StoreError> {
        let marker = std::fs::read_to_string(self.marker_path()).ok();
        match db.get(VERSION_KEY)? {
            Some(v) => {
                let found = String::from_utf8_lossy(&v).into_owned();
                if found != FORMAT_VERSION.to_string() {
                    return Err(StoreError::UnknownVersion {
                        path: self.db_path(),
                        found,
                    });
                }
                if marker.is_none() {
                    let _ = std::fs::write(self.marker_path(), FORMAT_VERSION.to_string());
                }
                Ok(())
            }
            None if marker.is_some() || !db.is_empty() => Err(StoreError::Damaged {
                path: self.db_path(),
                detail: "its format version record is missing".to_string(),
            }),
            None => {
                db.insert(VERSION_KEY, FORMAT_VERSION.to_string().as_bytes())?;
                db.flush()?;
                let _ = std::fs::write(self.marker_path(), FORMAT_VERSION.to_string());
                Ok(())
            }
        }
    }

    pub fn operations(&mut self) -> Result<Vec<Operation>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.scan_prefix(b"op/") {
            let (k, v) = item?;
            out.push(decode::<Operation>(&k, &v)?);
        }
        out.sort_by_key(|o| o.created_at);
        Ok(out)
    }

    pub fn operation(&mut self, id: &str) -> Result<Operation, StoreError> {
        let k = key("op", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Err(StoreError::NoOperation(id.to_string())),
        }
    }

    pub fn plan(&mut self, id: &str) -> Result<Plan, StoreError> {
        let k = key("plan", id);
        match self.db()?.get(&k)? {
            Some(v) => Plan::from_json(&v).map_err(|source| StoreError::Decode {
                key: String::from_utf8_lossy(&k).into_owned(),
                source,
            }),
            None => Err(StoreError::NoOperation(id.to_string())),
        }
    }

    pub fn records(&mut self, id: &str) -> Result<HashMap<PhaseId, PhaseRecord>, StoreError> {
        let prefix = format!("ph/{id}/");
        let db = self.db()?;
        let mut out = HashMap::new();
        for item in db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let phase = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.insert(PhaseId::parse(&phase), decode(&k, &v)?);
        }
        Ok(out)
    }

    pub fn vars(
        &mut self,
        id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let k = key("vars", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Ok(serde_json::Map::new()),
        }
    }

    pub fn secrets(&mut self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let k = key("secret", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Ok(BTreeMap::new()),
        }
    }

    pub fn lease(&mut self, id: &str) -> Result<Option<Lease>, StoreError> {
        let k = key("lease", id);
        match self.db()?.get(&k)? {
            Some(v) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn history(&mut self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let prefix = format!("hist/{id}/");
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    pub fn logs(&mut self, id: &str) -> Result<Vec<LogLine>, StoreError> {
        let prefix = format!("log/{id}/");
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
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
            Some((k, _)) => {
                let hex = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                u64::from_str_radix(&hex, 16).unwrap_or(0) + 1
            }
            None => 0,
        };
        Ok(next)
    }

    /// Writes `commit` for operation `op` as one atomic batch and flushes it to disk.
    pub fn commit(&mut self, op: &str, mut commit: Commit) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        let mut hist_seq = self.next_seq("hist", op)?;
        let mut log_seq = self.next_seq("log", op)?;
        let mut batch = sled::Batch::default();
        if let Some(o) = &commit.operation {
            batch.insert(key("op", op), encode(o));
        }
        if let Some(p) = &commit.plan {
            batch.insert(key("plan", op), p.clone());
        }
        if let Some(s) = &commit.secrets {
            batch.insert(key("secret", op), encode(s));
        }
        for (phase, record) in &commit.records {
            batch.insert(format!("ph/{op}/{phase}").into_bytes(), encode(record));
        }
        for entry in &mut commit.history {
            entry.seq = hist_seq;
            batch.insert(seq_key("hist", op, hist_seq), encode(entry));
            hist_seq += 1;
        }
        if let Some(v) = &commit.vars {
            batch.insert(key("vars", op), encode(v));
        }
        for line in &commit.logs {
            batch.insert(seq_key("log", op, log_seq), encode(line));
            log_seq += 1;
        }
        match &commit.lease {
            Some(Some(lease)) => batch.insert(key("lease", op), encode(lease)),
            Some(None) => batch.remove(key("lease", op)),
            None => {}
        }
        let db = self.db()?;
        db.apply_batch(batch)?;
        if commit.defer_flush {
            self.unflushed = true;
        } else {
            db.flush()?;
            self.unflushed = false;
        }
        self.next_seq.insert((op.to_string(), "hist"), hist_seq);
        self.next_seq.insert((op.to_string(), "log"), log_seq);
        Ok(())
    }
}

enum OpenFailure {
    Locked,
    Damaged(String),
}

fn open_catching_panics(path: &Path) -> Result<sled::Db, OpenFailure> {
    let path = path.to_path_buf();
    // sled can panic on some damaged files; that must become an error, not a crash.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        sled::Config::new()
            .path(&path)
            // Every change is flushed explicitly; no background flusher competing for it.
            .flush_every_ms(None)
            .open()
    });
    std::panic::set_hook(previous);
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e)))
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.to_string().contains("could not acquire lock") =>
        {
            Err(OpenFailure::Locked)
        }
        Ok(Err(e)) => Err(OpenFailure::Damaged(e.to_string())),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the storage engine could not read it".to_string());
            Err(OpenFailure::Damaged(detail))
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn format_time(ms: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn username() -> String {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    // SAFETY: getpwuid returns a pointer into static storage or NULL.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    format!("uid-{}", unsafe { libc::getuid() })
}

/// The start time of a process (clock ticks since boot), if it exists.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after the closing parenthesis are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state; a zombie has exited.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_of_this_process_is_alive_and_of_a_dead_pid_is_not() {
        let me = Lease {
            pid: std::process::id(),
            host: hostname(),
            user: username(),
            started_at: now_ms(),
            heartbeat_at: now_ms(),
            proc_start: process_start_ticks(std::process::id()),
            command: "test".into(),
        };
        assert!(me.is_alive());
        let reused = Lease {
            proc_start: me.proc_start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(
            !reused.is_alive(),
            "a reused pid must not count as the holder"
        );
        let remote_stale = Lease {
            host: "elsewhere.invalid".into(),
            heartbeat_at: now_ms() - LEASE_STALE_MS - 1,
            ..me
        };
        assert!(!remote_stale.is_alive());
    }

    #[test]
    fn commit_is_durable_and_sequenced() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let entry = |event: &str| HistoryEntry {
            seq: 0,
            time: 1,
            user: "u".into(),
            host: "h".into(),
            pid: 1,
            command: "c".into(),
            reason: None,
            event: event.into(),
            phase: None,
            from: None,
            to: None,
            error: None,
            forced: false,
            detail: None,
        };
        store
            .commit(
                "op1",
                Commit {
                    history: vec![entry("a"), entry("b")],
                    ..Default::default()
                },
            )
            .unwrap();
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        store
            .commit(
                "op1",
                Commit {
                    history: vec![entry("c")],
                    ..Default::default()
                },
            )
            .unwrap();
        let h = store.history("op1").unwrap();
        let seqs: Vec<(u64, &str)> = h.iter().map(|e| (e.seq, e.event.as_str())).collect();
        assert_eq!(seqs, [(0, "a"), (1, "b"), (2, "c")]);
    }

    #[test]
    fn a_missing_version_with_a_marker_is_damage_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        std::fs::remove_dir_all(dir.path().join("medic.db")).unwrap();
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .db()
            .unwrap()
            .insert(VERSION_KEY, b"99".as_slice())
            .unwrap();
        store.release();
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(err.to_string().contains("format version 99"), "{err}");
    }
}
