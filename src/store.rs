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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::action::Plan;
use crate::action::Stream;
use crate::plan::{PhaseId, PhaseRecord, PhaseState};

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
    #[error("no state directory at {path}; nothing was created. Pass --state-dir DIR (or set MEDIC_STATE_DIR) to the directory of your operations, or start one with `medic start NAME`")]
    NoStateDir { path: PathBuf },
    #[error("no state database in {path} (no operation was ever started with this state directory); nothing was created. Pass --state-dir DIR (or set MEDIC_STATE_DIR) to the directory of your operations, or start one with `medic start NAME`")]
    NoDatabase { path: PathBuf },
    #[error("the state directory {path} was deleted while this medic process used it; nothing more was started and no new database was created in its place. Restore {path} from a backup if you have one, then `medic plan` shows where the operation stands (check the phases that were running on the cluster itself)")]
    Gone { path: PathBuf },
    #[error("the state database in {path} was replaced while this medic process used it (it is no longer the database this run opened); nothing more was started and nothing was written to the new one. Find out who replaced {path}, then `medic plan` shows where that database says the operation stands")]
    Replaced { path: PathBuf },
    #[error("open state database {path}: it stayed locked by another medic process{} for {secs}s; wait for that process to finish (`ps -fp PID`) or stop it, then run this again", holder_note(*.holder))]
    Locked {
        path: PathBuf,
        secs: u64,
        holder: Option<u32>,
    },
    #[error("open state database {path}: pid {pid} ({command}) holds it and is stopped (suspended with Ctrl-Z or SIGSTOP), so it cannot let go; resume it with `fg` in the terminal it runs in, or `kill -CONT {pid}`, then run this again")]
    HolderStopped {
        path: PathBuf,
        pid: u32,
        command: String,
    },
    #[error("state directory {path} is read-only (read-only file system or mount); reading works (`medic plan`, `medic operations`, `medic plan export`), changing an operation needs it writable: remount it read-write, or copy the directory somewhere writable and pass --state-dir. The state is intact; do not move it aside")]
    ReadOnly { path: PathBuf },
    #[error("permission denied on the state database in {path} ({detail}); run medic as the user who owns it, or have them grant you access. Nothing was changed and the state is intact; do not move it aside")]
    PermissionDenied { path: PathBuf, detail: String },
    #[error("no space left on the file system of {path}; the last change was not recorded and nothing more was started. Free space there (`df -h {path}`), then `medic plan` shows where the operation stands and `medic plan resume` continues. The state is intact; do not move it aside")]
    DiskFull { path: PathBuf },
    #[error("i/o error on the state database in {path}: {source}; nothing more was changed. Check the disk (`dmesg`); the database is probably intact, so do not move it aside")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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

fn holder_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl StoreError {
    /// The process exit code for this failure: 3 refused for safety (another process holds
    /// the database), 2 a usage or input problem (no, damaged, read-only or inaccessible
    /// state), 1 a failure under a run (deleted, replaced, full, other I/O).
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::Locked { .. } | StoreError::HolderStopped { .. } => 3,
            StoreError::Damaged { .. }
            | StoreError::UnknownVersion { .. }
            | StoreError::NoOperation(_)
            | StoreError::CreateDir { .. }
            | StoreError::NoStateDir { .. }
            | StoreError::NoDatabase { .. }
            | StoreError::ReadOnly { .. }
            | StoreError::PermissionDenied { .. } => 2,
            StoreError::Gone { .. }
            | StoreError::Replaced { .. }
            | StoreError::DiskFull { .. }
            | StoreError::Io { .. }
            | StoreError::Sled(_)
            | StoreError::Decode { .. } => 1,
        }
    }

    /// The same failure again, for a store that reports it on every later access.
    fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Gone { path } => StoreError::Gone { path: path.clone() },
            StoreError::Replaced { path } => StoreError::Replaced { path: path.clone() },
            StoreError::ReadOnly { path } => StoreError::ReadOnly { path: path.clone() },
            StoreError::DiskFull { path } => StoreError::DiskFull { path: path.clone() },
            StoreError::PermissionDenied { path, detail } => StoreError::PermissionDenied {
                path: path.clone(),
                detail: detail.clone(),
            },
            StoreError::Damaged { path, detail } => StoreError::Damaged {
                path: path.clone(),
                detail: detail.clone(),
            },
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            other => StoreError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }

    /// Whether the state directory or database is absent (as opposed to present but unusable).
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            StoreError::NoStateDir { .. } | StoreError::NoDatabase { .. }
        )
    }
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

impl HistoryEntry {
    /// An entry for `event` done by `actor` now, for `reason`; phase, transition, error and
    /// detail are empty (set them with struct update syntax). The store assigns `seq`.
    pub(crate) fn new(event: impl Into<String>, actor: &Actor, reason: Option<String>) -> Self {
        HistoryEntry {
            seq: 0,
            time: now_ms(),
            user: actor.user.clone(),
            host: actor.host.clone(),
            pid: actor.pid,
            command: actor.command.clone(),
            reason,
            event: event.into(),
            phase: None,
            from: None,
            to: None,
            error: None,
            forced: false,
            detail: None,
        }
    }
}

/// One line of a phase's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub time: u64,
    pub phase: PhaseId,
    pub stream: Stream,
    pub text: String,
}

/// Lines stored under one key: output is written in chunks, not a key per line.
const LOG_CHUNK_LINES: usize = 512;

/// A stored log value: consecutive lines of one phase, or one line (databases written before
/// chunks). A chunk names its phase once; each line is `[time, stream, text]`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredLog {
    Chunk {
        phase: PhaseId,
        lines: Vec<(u64, Stream, String)>,
    },
    Line(LogLine),
}

/// Output kept per phase run: its first [`LOG_HEAD_BYTES`] and its last [`LOG_TAIL_BYTES`].
pub const LOG_HEAD_BYTES: usize = 1024 * 1024;
pub const LOG_TAIL_BYTES: usize = 1024 * 1024;

/// Bounds what one run of a phase writes to its log, whatever the size of its output.
///
/// 1. Lines go to the log as they come until [`LOG_HEAD_BYTES`] are taken.
/// 2. After that they are held in a window of the last [`LOG_TAIL_BYTES`]; older ones leave it
///    and are counted.
/// 3. [`OutputCap::finish`] gives a marker saying how much was dropped, then the window.
#[derive(Debug)]
pub struct OutputCap {
    head_left: usize,
    head_closed: bool,
    tail: VecDeque<LogLine>,
    tail_bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl Default for OutputCap {
    fn default() -> Self {
        OutputCap {
            head_left: LOG_HEAD_BYTES,
            head_closed: false,
            tail: VecDeque::new(),
            tail_bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }
}

impl OutputCap {
    /// The line back if it goes to the log now; `None` if it is held for the tail.
    pub fn admit(&mut self, line: LogLine) -> Option<LogLine> {
        let size = line.text.len() + 1;
        if !self.head_closed && size <= self.head_left {
            self.head_left -= size;
            return Some(line);
        }
        self.head_closed = true;
        self.tail_bytes += size;
        self.tail.push_back(line);
        while self.tail_bytes > LOG_TAIL_BYTES {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.text.len() + 1;
            self.dropped_lines += 1;
            self.dropped_bytes += old.text.len() as u64 + 1;
        }
        None
    }

    /// What is left to log at the end of the run: a marker if lines were dropped, then the
    /// held tail.
    pub fn finish(&mut self, phase: &PhaseId) -> Vec<LogLine> {
        let mut out = Vec::new();
        if self.dropped_lines > 0 {
            out.push(LogLine {
                time: now_ms(),
                phase: phase.clone(),
                stream: Stream::Medic,
                text: format!(
                    "… {} bytes ({} lines) of output dropped here: a phase's log keeps its first {} MiB and its last {} MiB",
                    self.dropped_bytes,
                    self.dropped_lines,
                    LOG_HEAD_BYTES >> 20,
                    LOG_TAIL_BYTES >> 20
                ),
            });
        }
        out.extend(self.tail.drain(..));
        *self = OutputCap::default();
        out
    }
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

    /// Whether the holder runs on this host and is stopped (Ctrl-Z, SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        self.host == hostname() && process_is_stopped(self.pid)
    }

    pub fn describe(&self) -> String {
        let stopped = if self.is_stopped() {
            format!(
                " [stopped (suspended with Ctrl-Z or SIGSTOP): resume it with `fg` in its terminal or `kill -CONT {}`]",
                self.pid
            )
        } else {
            String::new()
        };
        format!(
            "pid {} on {} (user {}, since {}, last heartbeat {}): {}{stopped}",
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

/// What a command may do to the state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only (`medic plan`, `operations`, `plan export|logs|history`): never creates
    /// anything, and works on a read-only or unwritable state directory (see
    /// [`Store::open_db`]).
    Read,
    /// Read and change an existing database (executors, `plan complete`); never creates one.
    Write,
    /// Create the state directory (mode 0700) and the database if missing: `medic start` only.
    Create,
}

/// The files a store opened, by device and inode, so that a directory deleted or replaced
/// under a running medic is noticed instead of silently written around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dir: (u64, u64),
    data: (u64, u64),
}

/// Why a store stopped working for good in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    Gone,
    Replaced,
}

pub struct Store {
    dir: PathBuf,
    access: Access,
    db: Option<sled::Db>,
    last_wanted_check: Instant,
    next_seq: HashMap<(String, &'static str), u64>,
    /// A deferred commit is written but not yet flushed.
    unflushed: bool,
    /// The state directory and data file as first opened; checked on every reopen and commit.
    identity: Option<Identity>,
    lost: Option<Lost>,
    /// A write failed: sled is unusable for this process (it can hang flushing after an
    /// I/O error), so every later access reports the same failure at once.
    poisoned: Option<StoreError>,
    /// A private copy being read because the state directory itself is not writable.
    read_copy: Option<PathBuf>,
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

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data always serializes")
}

impl Store {
    /// Opens (creating if needed) the state database in `dir` and checks its format version.
    /// Only `medic start` (which creates an operation) should create a database; everything
    /// else uses [`Store::open_with`] with [`Access::Read`] or [`Access::Write`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, Access::Create)
    }

    /// Opens the state database in `dir` for `access`.
    pub fn open_with(dir: &Path, access: Access) -> Result<Store, StoreError> {
        if access == Access::Create {
            create_state_dir(dir)?;
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            access,
            db: None,
            last_wanted_check: Instant::now(),
            next_seq: HashMap::new(),
            unflushed: false,
            identity: None,
            lost: None,
            poisoned: None,
            read_copy: None,
        };
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

    /// sled's data file (the one it locks and writes).
    fn data_path(&self) -> PathBuf {
        self.db_path().join("db")
    }

    /// Whether this store reads a private copy (the state directory is not writable).
    pub fn is_read_copy(&self) -> bool {
        self.read_copy.is_some()
    }

    fn lost_error(&self, lost: Lost) -> StoreError {
        match lost {
            Lost::Gone => StoreError::Gone {
                path: self.dir.clone(),
            },
            Lost::Replaced => StoreError::Replaced {
                path: self.dir.clone(),
            },
        }
    }

    /// Checks that the state directory and data file are still the ones first opened. Once
    /// they are not, the store refuses every further access (it never opens, and so never
    /// creates, a database in their place).
    fn verify_identity(&mut self) -> Result<(), StoreError> {
        if let Some(lost) = self.lost {
            return Err(self.lost_error(lost));
        }
        let Some(expected) = self.identity else {
            return Ok(());
        };
        let lost = match identity_of(&self.dir) {
            Ok(found) if found == expected => return Ok(()),
            Ok(_) => Lost::Replaced,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lost::Gone,
            Err(e) => return Err(classify_io(&self.dir, e)),
        };
        self.lost = Some(lost);
        // What this handle still writes goes to the deleted files, never to a new database;
        // it is leaked rather than dropped, as sled's drop may hang flushing after an error.
        if let Some(db) = self.db.take() {
            std::mem::forget(db);
        }
        Err(self.lost_error(lost))
    }

    /// What a failed write means: the directory gone or replaced (sled then fails to create
    /// its files in it) explains the I/O error better than the error itself.
    fn write_failure(&mut self, e: sled::Error) -> StoreError {
        let err = match self.explain_failure() {
            Err(lost) => lost,
            Ok(()) => classify_sled(&self.dir, e),
        };
        // sled waits forever for a failed write to become durable when it flushes on drop:
        // leak this handle (the process ends soon) and answer every later access at once.
        if let Some(db) = self.db.take() {
            std::mem::forget(db);
        }
        self.poisoned = Some(err.duplicate());
        err
    }

    /// After a failure of sled: a directory being deleted (`rm -rf`
    /// half-way: a blob file gone, the data file not yet) fails sled with "not found" and
    /// the like while the directory still looks like ours. Look again for a moment, so the
    /// error says what happened rather than the symptom.
    fn explain_failure(&mut self) -> Result<(), StoreError> {
        for _ in 0..5 {
            match self.identity {
                Some(_) => self.verify_identity()?,
                // Deleted while this first open ran.
                None => self.check_present()?,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.identity {
            Some(_) => self.verify_identity(),
            None => self.check_present(),
        }
    }

    /// Before the first open: the state directory and its database must exist, unless this
    /// store may create them.
    fn check_present(&self) -> Result<(), StoreError> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StoreError::Damaged {
                    path: self.dir.clone(),
                    detail: "it is a file, not a directory".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoStateDir {
                    path: self.dir.clone(),
                })
            }
            Err(e) => return Err(classify_io(&self.dir, e)),
        }
        match std::fs::metadata(self.data_path()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.marker_path().exists() {
                    Err(StoreError::Damaged {
                        path: self.db_path(),
                        detail: format!(
                            "its data file is missing while {} says a database was created here",
                            self.marker_path().display()
                        ),
                    })
                } else if self.access == Access::Create {
                    Ok(())
                } else {
                    Err(StoreError::NoDatabase {
                        path: self.dir.clone(),
                    })
                }
            }
            Err(e) => Err(classify_io(&self.dir, e)),
        }
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
                if let Err(e) = db.flush() {
                    return Err(self.write_failure(e));
                }
            }
            self.unflushed = false;
            self.verify_identity()?;
        }
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.db.is_some()
    }

    /// The open database, opening it if needed, and stepping aside first if a waiter asked.
    pub fn db(&mut self) -> Result<&sled::Db, StoreError> {
        if let Some(e) = &self.poisoned {
            return Err(e.duplicate());
        }
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

    /// Opens sled on the database. sled creates whatever is missing, so the checks before it
    /// decide whether it may: on a reopen the directory and data file must be the ones first
    /// opened ([`Store::verify_identity`]); on a first open they must exist unless this store
    /// creates them. (A deletion racing with sled's open, e.g. `rm -rf` half-way through the
    /// directory while sled recreates a missing file, is caught by the identity check right
    /// after it and reported, never used; what sled made in that instant stays behind.)
    ///
    /// sled opens its files for writing even to read (and may write as it opens). A reader on
    /// a read-only, unwritable or full state directory therefore reads a private copy of the database (in a 0700 temporary
    /// directory, removed on drop): nobody can be changing a read-only directory, and an
    /// unwritable one can at worst be caught mid-write, which sled recovers from like a crash.
    fn open_db(&mut self) -> Result<sled::Db, StoreError> {
        let opened = self.open_db_once();
        if opened.is_err() {
            self.explain_failure()?;
        }
        opened
    }

    fn open_db_once(&mut self) -> Result<sled::Db, StoreError> {
        if self.identity.is_some() {
            self.verify_identity()?;
        } else {
            self.check_present()?;
        }
        let path = self.db_path();
        let started = Instant::now();
        let mut delay = Duration::from_millis(1);
        let mut next_holder_check = Duration::from_millis(150);
        loop {
            match open_catching_panics(&path) {
                Ok(db) => {
                    let _ = std::fs::remove_file(self.wanted_path());
                    self.adopt(&db)?;
                    if self.read_copy.is_none() {
                        self.check_version(&db)?;
                    }
                    return Ok(db);
                }
                Err(OpenFailure::Locked) => {
                    let waited = started.elapsed();
                    if waited >= next_holder_check {
                        next_holder_check = waited + Duration::from_millis(150);
                        // A stopped holder never steps aside: say so now instead of waiting.
                        let holder = lock_holder(&self.data_path());
                        if let Some(pid) = holder.filter(|p| process_is_stopped(*p)) {
                            return Err(StoreError::HolderStopped {
                                path,
                                pid,
                                command: process_command(pid),
                            });
                        }
                        if waited > LOCK_WAIT {
                            return Err(StoreError::Locked {
                                path,
                                secs: LOCK_WAIT.as_secs(),
                                holder,
                            });
                        }
                    }
                    // Touch the wanted file so the holder steps aside.
                    let _ = std::fs::write(self.wanted_path(), std::process::id().to_string());
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(8));
                }
                Err(OpenFailure::Io(e)) => {
                    let err = classify_io(&self.dir, e);
                    if self.access == Access::Read
                        && matches!(
                            err,
                            StoreError::ReadOnly { .. }
                                | StoreError::PermissionDenied { .. }
                                | StoreError::DiskFull { .. }
                        )
                    {
                        return self.open_read_copy(err);
                    }
                    return Err(err);
                }
                Err(OpenFailure::Damaged(detail)) => {
                    return Err(StoreError::Damaged { path, detail })
                }
            }
        }
    }

    /// Records (first open) or checks (reopen) the identity of what sled just opened.
    fn adopt(&mut self, _db: &sled::Db) -> Result<(), StoreError> {
        let found = identity_of(&self.dir).map_err(|e| classify_io(&self.dir, e))?;
        match self.identity {
            None => {
                self.identity = Some(found);
                Ok(())
            }
            Some(expected) if expected == found => Ok(()),
            Some(_) => {
                self.lost = Some(Lost::Replaced);
                Err(self.lost_error(Lost::Replaced))
            }
        }
    }

    /// Copies the database to a private temporary directory and opens the copy (see
    /// [`Store::open_db`]); `why` is the error to report if even reading fails.
    fn open_read_copy(&mut self, why: StoreError) -> Result<sled::Db, StoreError> {
        if let Some(old) = self.read_copy.take() {
            let _ = std::fs::remove_dir_all(old);
        }
        sweep_read_copies();
        let base =
            std::env::temp_dir().join(format!("medic-read-{}-{}", std::process::id(), now_ms()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&base)
                .map_err(|e| classify_io(&base, e))?;
        }
        self.read_copy = Some(base.clone());
        let copy = base.join("medic.db");
        if let Err(e) = copy_dir(&self.db_path(), &copy) {
            return Err(match e.kind() {
                std::io::ErrorKind::PermissionDenied => why,
                _ => classify_io(&self.dir, e),
            });
        }
        match open_catching_panics(&copy) {
            Ok(db) => {
                let found = identity_of(&self.dir).map_err(|e| classify_io(&self.dir, e))?;
                if self.identity.is_some_and(|i| i != found) {
                    self.lost = Some(Lost::Replaced);
                    return Err(self.lost_error(Lost::Replaced));
                }
                self.identity = Some(found);
                Ok(db)
            }
            Err(OpenFailure::Damaged(detail)) => Err(StoreError::Damaged {
                path: self.db_path(),
                detail,
            }),
            Err(OpenFailure::Io(e)) => Err(classify_io(&self.dir, e)),
            Err(OpenFailure::Locked) => Err(why),
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
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (lines, next) = self.logs_after(id, after.as_deref(), usize::MAX)?;
            out.extend(lines);
            match next {
                Some(k) => after = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// The log lines of operation `id` stored after key `after` (from the start: `None`), in
    /// chunks until about `max_lines`; with the key to continue from, `None` at the end. Lets
    /// a reader print a long log batch by batch without holding the database meanwhile.
    pub fn logs_after(
        &mut self,
        id: &str,
        after: Option<&[u8]>,
        max_lines: usize,
    ) -> Result<(Vec<LogLine>, Option<Vec<u8>>), StoreError> {
        use std::ops::Bound;
        let prefix = format!("log/{id}/");
        let start = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.clone().into_bytes()),
        };
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            match decode::<StoredLog>(&k, &v)? {
                StoredLog::Chunk { phase, lines } => {
                    out.extend(lines.into_iter().map(|(time, stream, text)| LogLine {
                        time,
                        phase: phase.clone(),
                        stream,
                        text,
                    }))
                }
                StoredLog::Line(line) => out.push(line),
            }
            if out.len() >= max_lines {
                return Ok((out, Some(k.to_vec())));
            }
        }
        Ok((out, None))
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
        if self.read_copy.is_some() {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
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
            return Err(self.write_failure(e));
        }
        self.unflushed = commit.defer_flush;
        // Written into the files this store opened: make sure they are still the state
        // directory's (a deleted directory's open files accept writes that nobody will read).
        self.verify_identity()?;
        self.next_seq.insert((op.to_string(), "hist"), hist_seq);
        self.next_seq.insert((op.to_string(), "log"), log_seq);
        Ok(())
    }
}

enum OpenFailure {
    Locked,
    /// The file system refused (read-only, permissions, full, ...): not damage.
    Io(std::io::Error),
    Damaged(String),
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

fn identity_of(dir: &Path) -> std::io::Result<Identity> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(dir)?;
    let f = std::fs::metadata(dir.join("medic.db").join("db"))?;
    Ok(Identity {
        dir: (d.dev(), d.ino()),
        data: (f.dev(), f.ino()),
    })
}

/// An I/O error on the state directory `dir`, by what the operator can do about it.
fn classify_io(dir: &Path, e: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    let path = dir.to_path_buf();
    let code = e.raw_os_error();
    let text = e.to_string();
    if code == Some(libc::EROFS)
        || e.kind() == ErrorKind::ReadOnlyFilesystem
        || text.contains("Read-only file system")
    {
        StoreError::ReadOnly { path }
    } else if code == Some(libc::ENOSPC)
        || code == Some(libc::EDQUOT)
        || matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || text.contains("No space left")
    {
        StoreError::DiskFull { path }
    } else if code == Some(libc::EACCES)
        || code == Some(libc::EPERM)
        || e.kind() == ErrorKind::PermissionDenied
    {
        StoreError::PermissionDenied {
            detail: ownership(dir),
            path,
        }
    } else {
        StoreError::Io { path, source: e }
    }
}

fn classify_sled(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => classify_io(dir, io),
        other => StoreError::Damaged {
            path: dir.join("medic.db"),
            detail: other.to_string(),
        },
    }
}

/// "owned by root, mode 700; medic runs as nobody" for a permission error's message.
fn ownership(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let me = username();
    // The deepest of the state directory and its database that can be looked at.
    let db = dir.join("medic.db");
    let seen = std::fs::metadata(&db)
        .map(|m| (db.clone(), m))
        .or_else(|_| std::fs::metadata(dir).map(|m| (dir.to_path_buf(), m)));
    match seen {
        Ok((path, m)) => format!(
            "{} is owned by {}, mode {:o}; medic runs as {me}",
            path.display(),
            user_name(m.uid()),
            m.mode() & 0o7777
        ),
        Err(_) => format!("medic runs as {me} and cannot look into it"),
    }
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; read at once.
    unsafe {
        let pw = libc::getpwuid(uid);
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    format!("uid {uid}")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The pid holding the lock on `file`, from /proc/locks (sled takes an exclusive flock).
fn lock_holder(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(file).ok()?;
    let dev = m.dev();
    let exact = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        m.ino()
    );
    let ino = format!(":{}", m.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let mut by_inode = None;
    for line in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5537857 0 EOF"; waiters start with "->".
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            continue;
        }
        let (Some(pid), Some(id)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if *id == exact {
            return Some(pid);
        }
        // Overlay and similar file systems report another device than stat does.
        if id.ends_with(&ino) {
            by_inode.get_or_insert(pid);
        }
    }
    by_inode
}

/// Whether `pid` is stopped (job control or tracing): state `T` or `t` in /proc/PID/stat.
pub fn process_is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "T" || state == "t")
}

/// What a process is, for messages: its program and leading words (`medic plan resume`),
/// never its options or values, which may hold secrets (`--set token=...`).
fn process_command(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let mut words = raw.split('\0').filter(|a| !a.is_empty());
            let program = words
                .next()
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string());
            program
                .into_iter()
                .chain(
                    words
                        .take_while(|w| !w.starts_with('-') && !w.contains('='))
                        .take(3)
                        .map(str::to_string),
                )
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Opens sled on `path`, working around a sled 0.34 crash-recovery bug: sled writes a snapshot
/// to `snap.N.generating` and renames it when complete, but also reads a `.generating` file on
/// open, so a process killed while writing one (a release of the database takes a snapshot)
/// leaves a database that reports "Read corrupted data". When opening reports damage and such
/// files exist, they are removed (they are incomplete by definition, and nobody else can be
/// writing one: sled took the database's lock before it read them) and the open is retried
/// once. The log is complete without them; the previous snapshot or a replay covers it.
fn open_catching_panics(path: &Path) -> Result<sled::Db, OpenFailure> {
    match open_sled(path) {
        Err(OpenFailure::Damaged(detail)) => {
            let partial: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
                })
                .collect();
            if partial.is_empty() {
                return Err(OpenFailure::Damaged(detail));
            }
            for p in &partial {
                let _ = std::fs::remove_file(p);
            }
            open_sled(path)
        }
        other => other,
    }
}

fn open_sled(path: &Path) -> Result<sled::Db, OpenFailure> {
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
        Ok(Err(sled::Error::Io(e))) => Err(OpenFailure::Io(e)),
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

/// Removes the private read copies (see `open_read_copy`) of medic processes that died
/// without removing their own (killed, or ended by SIGPIPE under `| head`): they hold secrets.
fn sweep_read_copies() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("medic-read-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_copies_of_dead_processes_are_swept_and_live_ones_kept() {
        let tmp = std::env::temp_dir();
        let dead = tmp.join("medic-read-4294967290-1");
        let live = tmp.join(format!("medic-read-{}-1", std::process::id()));
        for d in [&dead, &live] {
            std::fs::create_dir_all(d.join("medic.db")).unwrap();
        }
        sweep_read_copies();
        assert!(!dead.exists(), "a dead process's copy stays");
        assert!(live.exists(), "a live process's copy was removed");
        std::fs::remove_dir_all(live).unwrap();
    }

    fn line(phase: &str, text: &str) -> LogLine {
        LogLine {
            time: 1,
            phase: PhaseId::parse(phase),
            stream: Stream::Stdout,
            text: text.to_string(),
        }
    }

    #[test]
    fn output_cap_keeps_head_and_tail_and_counts_the_middle() {
        let mut cap = OutputCap::default();
        let text = "z".repeat(1023); // 1 KiB a line with its newline
        let admitted = (0..3000)
            .filter(|_| cap.admit(line("/p", &text)).is_some())
            .count();
        assert_eq!(admitted, LOG_HEAD_BYTES / 1024);
        let rest = cap.finish(&PhaseId::parse("/p"));
        assert_eq!(rest[0].stream, Stream::Medic);
        let dropped = 3000 - admitted - (LOG_TAIL_BYTES / 1024);
        assert!(
            rest[0]
                .text
                .contains(&format!("{} bytes ({dropped} lines)", dropped * 1024)),
            "{}",
            rest[0].text
        );
        assert_eq!(rest.len() - 1, LOG_TAIL_BYTES / 1024);
        // Small output goes through whole, with no marker.
        assert!(cap.admit(line("/p", "short")).is_some());
        assert!(cap.finish(&PhaseId::parse("/p")).is_empty());
    }

    #[test]
    fn logs_are_stored_in_chunks_and_read_in_batches_with_old_single_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        // A database written before chunks holds one line per key.
        let old = line("/old", "legacy");
        store
            .db()
            .unwrap()
            .insert(seq_key("log", "op", 0), encode(&old))
            .unwrap();
        let mut logs: Vec<LogLine> = (0..1200).map(|i| line("/a", &i.to_string())).collect();
        logs.push(line("/b", "other phase"));
        store
            .commit(
                "op",
                Commit {
                    logs: logs.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        let prefix = b"log/op/".as_slice();
        let keys = store.db().unwrap().scan_prefix(prefix).count();
        assert_eq!(
            keys,
            1 + 3 + 1,
            "legacy line, 1200 lines in 3 chunks, one for /b"
        );
        let mut want = vec![old];
        want.extend(logs);
        assert_eq!(store.logs("op").unwrap(), want);
        let (first, next) = store.logs_after("op", None, 600).unwrap();
        assert_eq!(first.len(), 1 + 512 + 512);
        let (rest, end) = store.logs_after("op", next.as_deref(), 600).unwrap();
        assert_eq!(rest.len(), 1200 - 1024 + 1);
        assert!(end.is_none());
    }

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
    fn a_snapshot_left_half_written_by_a_killed_process_does_not_damage_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .commit(
                "op1",
                Commit {
                    vars: Some(serde_json::Map::from_iter([("k".into(), "v".into())])),
                    ..Default::default()
                },
            )
            .unwrap();
        drop(store);
        // What sled leaves when killed while writing a snapshot (it reads such files on open).
        let partial = dir
            .path()
            .join("medic.db")
            .join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&partial, b"half a snapshot").unwrap();
        let mut store = Store::open(dir.path()).expect("opens despite the partial snapshot");
        assert_eq!(store.vars("op1").unwrap()["k"], "v");
        assert!(!partial.exists());
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
    fn reading_a_missing_state_dir_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        for access in [Access::Read, Access::Write] {
            let err = Store::open_with(&state, access).err().expect("must refuse");
            assert!(matches!(err, StoreError::NoStateDir { .. }), "{err}");
        }
        assert!(!state.exists());
        std::fs::create_dir(&state).unwrap();
        let err = Store::open_with(&state, Access::Read)
            .err()
            .expect("must refuse");
        assert!(matches!(err, StoreError::NoDatabase { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
        // `medic start` creates it, owner only.
        drop(Store::open(&dir.path().join("new")).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn io_errors_are_classified_by_what_to_do() {
        let dir = Path::new("/x/state");
        let cases = [
            (libc::EROFS, "ReadOnly"),
            (libc::ENOSPC, "DiskFull"),
            (libc::EDQUOT, "DiskFull"),
            (libc::EACCES, "PermissionDenied"),
            (libc::EPERM, "PermissionDenied"),
            (libc::EIO, "Io"),
        ];
        for (code, want) in cases {
            let err = classify_io(dir, std::io::Error::from_raw_os_error(code));
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "errno {code}: {got}");
            assert!(!err.to_string().contains("is damaged"), "{err}");
            assert!(err.to_string().contains("/x/state"), "{err}");
        }
        // sled reports a flush error again with only its kind and text.
        let again = std::io::Error::other(format!(
            "{:?}",
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        ));
        assert!(matches!(
            classify_io(dir, again),
            StoreError::DiskFull { .. }
        ));
    }

    #[test]
    fn a_store_whose_directory_was_deleted_or_replaced_refuses_every_access() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let aside = dir.path().join("aside");
        // Deleted (moved away): gone, and nothing is recreated.
        let mut store = Store::open(&state).unwrap();
        store.release();
        std::fs::rename(&state, &aside).unwrap();
        let err = store.operations().expect_err("must refuse");
        assert!(matches!(err, StoreError::Gone { .. }), "{err}");
        assert!(!state.exists(), "recreated");
        // Once lost, it stays lost, even when the directory comes back.
        std::fs::rename(&aside, &state).unwrap();
        let err = store.operations().expect_err("must refuse");
        assert!(matches!(err, StoreError::Gone { .. }), "{err}");
        // Replaced by another database while released.
        let mut store = Store::open(&state).unwrap();
        store.release();
        std::fs::rename(&state, &aside).unwrap();
        drop(Store::open(&state).unwrap());
        let err = store.operations().expect_err("must refuse");
        assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
        // Replaced while held: the commit lands in the old files and is reported.
        std::fs::remove_dir_all(&state).unwrap();
        std::fs::rename(&aside, &state).unwrap();
        let mut store = Store::open(&state).unwrap();
        std::fs::rename(&state, &aside).unwrap();
        drop(Store::open(&state).unwrap());
        let err = store
            .commit(
                "op",
                Commit {
                    vars: Some(serde_json::Map::new()),
                    ..Default::default()
                },
            )
            .expect_err("must refuse");
        assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
    }

    #[test]
    fn this_process_is_not_stopped() {
        assert!(!process_is_stopped(std::process::id()));
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
