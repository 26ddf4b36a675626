//! Opening sled itself: panics and a half-written snapshot turned into errors, and the private
//! read copy used to read a state directory this process cannot write.

use std::path::Path;

use super::{classify_io, identity_of, now_ms, Lost, Store, StoreError};

/// How often sled's background thread runs once a hold reclaims space: it flushes (a no-op for
/// medic, which flushes every commit itself) and then, for up to half this period, rewrites the
/// live pages of segments that are mostly garbage, so that freed segments are reused. Without
/// it sled never reclaims anything: each transition leaves a superseded fragment behind, and a
/// 10,000-phase run left a 16-17 MB log that every reader opens.
const GC_EVERY_MS: u64 = 50;
/// Commits in one hold after which the writer reopens the database with that thread. Not from
/// the start: the thread fsyncs as it starts and closing the database waits for it, which cost
/// a short command (one phase, `plan set`) up to ~100 ms on a loaded disk; a short hold leaves
/// little garbage anyway.
const RECLAIM_AFTER_COMMITS: u32 = 256;

impl Store {
    /// Counts a commit; after [`RECLAIM_AFTER_COMMITS`] in one hold of a writer, flushes and
    /// closes the database so that the next access reopens it with sled's reclaiming thread,
    /// for the rest of this process.
    pub(super) fn note_commit(&mut self) -> Result<(), StoreError> {
        self.commits_since_open += 1;
        if self.reclaim || self.commits_since_open < RECLAIM_AFTER_COMMITS {
            return Ok(());
        }
        self.reclaim = true;
        if let Some(Err(e)) = self.db.as_ref().map(|db| db.flush()) {
            return Err(self.write_failure(e));
        }
        self.release();
        Ok(())
    }

    /// Copies the database to a private temporary directory and opens the copy (see
    /// [`Store::open_db`]); `why` is the error to report if even reading fails.
    pub(super) fn open_read_copy(&mut self, why: StoreError) -> Result<sled::Db, StoreError> {
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
        match open_catching_panics(&copy, false) {
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
}

pub(super) enum OpenFailure {
    Locked,
    /// The file system refused (read-only, permissions, full, ...): not damage.
    Io(std::io::Error),
    Damaged(String),
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

/// Opens sled on `path`, working around a sled 0.34 crash-recovery bug: sled writes a snapshot
/// to `snap.N.generating` and renames it when complete, but also reads a `.generating` file on
/// open, so a process killed while writing one (a release of the database takes a snapshot)
/// leaves a database that reports "Read corrupted data". When opening reports damage and such
/// files exist, they are removed (they are incomplete by definition, and nobody else can be
/// writing one: sled took the database's lock before it read them) and the open is retried
/// once. The log is complete without them; the previous snapshot or a replay covers it.
/// `reclaim`: run sled's background thread (see [`GC_EVERY_MS`]).
pub(super) fn open_catching_panics(path: &Path, reclaim: bool) -> Result<sled::Db, OpenFailure> {
    match open_sled(path, reclaim) {
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
            open_sled(path, reclaim)
        }
        other => other,
    }
}

fn open_sled(path: &Path, reclaim: bool) -> Result<sled::Db, OpenFailure> {
    let path = path.to_path_buf();
    let background = reclaim.then_some(GC_EVERY_MS);
    // sled can panic on some damaged files; that must become an error, not a crash.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        sled::Config::new()
            .path(&path)
            // Every change is flushed explicitly; the background thread is for reclaiming
            // space (see GC_EVERY_MS), and only a long hold of a writer runs it.
            .flush_every_ms(background)
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

/// Removes the private read copies (see `open_read_copy`) of medic processes that died
/// without removing their own (killed, or ended by SIGPIPE under `| head`): they hold secrets.
pub(super) fn sweep_read_copies() {
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
