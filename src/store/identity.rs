//! Deleted/replaced detection: the state directory and data file are remembered by device and
//! inode when first opened and checked on every reopen and commit, so a directory deleted or
//! replaced under a running medic stops it instead of being silently written around.
//!
//! 1. [`Store::adopt`] records the identity on the first open (checks it on a reopen).
//! 2. [`Store::verify_identity`] compares it after each write; once lost, every access fails.
//! 3. [`Store::check_present`] decides, before a first open, whether sled may create files.

use std::path::Path;
use std::time::Duration;

use super::{classify_io, classify_sled, Access, Store, StoreError};

/// The files a store opened, by device and inode, so that a directory deleted or replaced
/// under a running medic is noticed instead of silently written around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    dir: (u64, u64),
    data: (u64, u64),
}

/// Why a store stopped working for good in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lost {
    Gone,
    Replaced,
}

impl Store {
    pub(super) fn lost_error(&self, lost: Lost) -> StoreError {
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
    pub(super) fn verify_identity(&mut self) -> Result<(), StoreError> {
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
    pub(super) fn write_failure(&mut self, e: sled::Error) -> StoreError {
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
    pub(super) fn explain_failure(&mut self) -> Result<(), StoreError> {
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
    pub(super) fn check_present(&self) -> Result<(), StoreError> {
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

    /// Records (first open) or checks (reopen) the identity of what sled just opened.
    pub(super) fn adopt(&mut self, _db: &sled::Db) -> Result<(), StoreError> {
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
}

pub(super) fn identity_of(dir: &Path) -> std::io::Result<Identity> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(dir)?;
    let f = std::fs::metadata(dir.join("medic.db").join("db"))?;
    Ok(Identity {
        dir: (d.dev(), d.ino()),
        data: (f.dev(), f.ino()),
    })
}
