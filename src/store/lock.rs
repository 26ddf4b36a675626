//! The holder lock: sled allows one process at a time, so a process waiting for the database
//! announces itself in a `wanted` file and the holder steps aside; a stopped holder (Ctrl-Z),
//! which never steps aside, is detected from /proc and reported at once.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::open::{open_catching_panics, OpenFailure};
use super::{classify_io, process_command, process_is_stopped, Access, Store, StoreError};

/// How long a process waits for another one to let go of the database.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How often a holder looks for waiters.
const WANTED_CHECK: Duration = Duration::from_millis(10);

impl Store {
    /// The open database, opening it if needed, and stepping aside first if a waiter asked.
    pub(crate) fn db(&mut self) -> Result<&sled::Db, StoreError> {
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
            self.commits_since_open = 0;
            self.last_wanted_check = Instant::now();
        }
        Ok(self.db.as_ref().expect("opened above"))
    }

    /// Closes the database if another process is waiting for it; returns whether it did.
    pub(crate) fn yield_to_waiters(&mut self) -> bool {
        if self.etcd.is_some() {
            return false;
        }
        if self.db.is_some() && self.someone_waits() {
            self.release();
            return true;
        }
        false
    }

    pub(super) fn someone_waits(&self) -> bool {
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
    pub(super) fn open_db(&mut self) -> Result<sled::Db, StoreError> {
        let opened = self.open_db_once();
        if opened.is_err() {
            self.explain_failure()?;
        }
        opened
    }

    pub(super) fn open_db_once(&mut self) -> Result<sled::Db, StoreError> {
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
            match open_catching_panics(&path, self.reclaim && self.access != Access::Read) {
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
