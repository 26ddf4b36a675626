//! What can go wrong with the state database ([`StoreError`]), each failure with the exit code
//! it ends the process with, and the classification of I/O errors by what the operator can do.

use std::path::{Path, PathBuf};

use super::{username, FORMAT_VERSION};

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
    #[error(transparent)]
    Etcd(#[from] super::etcd::EtcdStoreError),
}

fn holder_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl StoreError {
    /// The process exit code for this failure: 3 refused for safety (another process holds
    /// the database), 2 a usage or input problem (no, damaged, read-only or inaccessible
    /// state), 1 a failure under a run (deleted, replaced, full, other I/O).
    pub(crate) fn exit_code(&self) -> i32 {
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
            StoreError::Etcd(e) => e.exit_code(),
        }
    }

    /// The same failure again, for a store that reports it on every later access.
    pub(super) fn duplicate(&self) -> StoreError {
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
    pub(crate) fn is_missing(&self) -> bool {
        matches!(
            self,
            StoreError::NoStateDir { .. } | StoreError::NoDatabase { .. }
        )
    }
}

/// An I/O error on the state directory `dir`, by what the operator can do about it.
pub(super) fn classify_io(dir: &Path, e: std::io::Error) -> StoreError {
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

pub(super) fn classify_sled(dir: &Path, e: sled::Error) -> StoreError {
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
