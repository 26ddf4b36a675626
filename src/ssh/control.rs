//! Where ssh master sockets live, which of them may be trusted, and closing them.
//!
//! Layout (short: a socket path must fit `sun_path`, ~104 bytes, with ssh's temporary suffix):
//!
//! ```text
//! BASE = $XDG_RUNTIME_DIR/medic, else $TMPDIR/medic-UID, else /tmp/medic-UID    (0700, ours)
//! BASE/p/KEY          a master kept for later medic runs (ssh.persist > 0)
//! BASE/p/KEY.lock     held while one process checks or opens that master
//! BASE/p/KEY.node     whom it reaches (node, destination), for `medic ssh close`
//! BASE/p/KEY.log      the master's own ssh log
//! BASE/PID/KEY        a master of one medic process (ssh.persist 0), closed when it exits
//! ```
//!
//! 1. A directory is used only if it is a real directory, ours, and writable by nobody else;
//!    one that others could write to is made private and emptied (whatever is in it may have
//!    been planted); one that is not ours is replaced, or refused if it cannot be.
//! 2. A socket is tried only if it is a socket, ours, and closed to others; anything else at
//!    its path is removed. (Whether its master answers is the pool's check.)
//! 3. Masters are closed with `ssh -O exit`; a killed medic's per-process masters are closed by
//!    the next run (`close_orphaned_masters`).

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Paths longer than this leave too little room for a socket name in `sun_path`.
const MAX_BASE_LEN: usize = 60;

/// The directory all of this user's control directories live under.
pub(crate) fn base_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let short = |p: &Path| p.is_absolute() && p.as_os_str().len() <= MAX_BASE_LEN;
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        let dir = run.join("medic");
        if short(&dir) {
            return dir;
        }
    }
    let tmp = std::env::temp_dir().join(format!("medic-{uid}"));
    if short(&tmp) {
        return tmp;
    }
    PathBuf::from(format!("/tmp/medic-{uid}"))
}

/// The directory of masters kept between medic runs.
pub(crate) fn persistent_dir(base: &Path) -> PathBuf {
    base.join("p")
}

/// Makes `dir` a private directory of ours (see the module comment, step 1).
pub(crate) fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != uid() {
        // Not ours (or not a directory): nothing in it is trusted; replace it.
        if meta.is_dir() {
            std::fs::remove_dir_all(dir)?;
        } else {
            std::fs::remove_file(dir)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        return check_private(dir);
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        // Others could have put anything here: empty it before trusting it again.
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
        }
    }
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    check_private(dir)
}

fn check_private(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() && meta.uid() == uid() && meta.permissions().mode() & 0o077 == 0 {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a private directory of this user after fixing it; remove it",
        ))
    }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// Whether the socket at `path` may be tried; anything untrusted there is removed.
pub(crate) fn socket_is_trusted(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let trusted = meta.file_type().is_socket()
        && meta.uid() == uid()
        && meta.permissions().mode() & 0o077 == 0;
    if !trusted {
        let _ = std::fs::remove_file(path);
    }
    trusted
}

/// An exclusive lock on one socket's `.lock` file, released when dropped.
pub(crate) struct SocketLock {
    _file: File,
}

/// Waits (polling, without blocking the runtime) for the lock on `path` until `deadline`.
pub(crate) async fn lock(path: &Path, deadline: Instant) -> std::io::Result<SocketLock> {
    use std::os::unix::io::AsRawFd;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    loop {
        // SAFETY: the descriptor is open for the life of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(SocketLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err);
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "another medic process holds it",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whom a kept master reaches, written beside its socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct MasterNote {
    pub(crate) node: String,
    pub(crate) destination: String,
}

pub(crate) fn write_note(socket: &Path, note: &MasterNote) {
    let json = serde_json::to_vec(note).expect("a note serializes");
    let _ = std::fs::write(socket.with_extension("node"), json);
}

/// A master kept in `dir`: its socket and whom it reaches (if its note was readable).
pub(crate) struct KeptMaster {
    pub(crate) key: String,
    pub(crate) socket: PathBuf,
    pub(crate) note: Option<MasterNote>,
}

/// The masters kept in the persistent directory (sockets whose name is a key).
pub(crate) fn kept_masters(dir: &Path) -> Vec<KeptMaster> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut kept: Vec<KeptMaster> = entries
        .flatten()
        .filter_map(|e| {
            let key = e.file_name().to_str()?.to_string();
            if key.contains('.') || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let socket = e.path();
            let note = std::fs::read(socket.with_extension("node"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            Some(KeptMaster { key, socket, note })
        })
        .collect();
    kept.sort_by(|a, b| a.key.cmp(&b.key));
    kept
}

/// How long `ssh -O exit` may take: a master that does not answer is left to its idle timeout.
const EXIT_WAIT: Duration = Duration::from_secs(3);

/// Asks the master behind `socket` to exit and removes its files; true if a master answered.
pub(crate) fn exit_master(socket: &Path) -> bool {
    let answered = socket_is_trusted(socket) && ask_to_exit(socket);
    remove_socket(socket);
    answered
}

fn ask_to_exit(socket: &Path) -> bool {
    let Ok(mut child) = std::process::Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-O", "exit", "medic-master"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Removes a socket and the files beside it (its master, if any, can no longer be reached).
/// The `.lock` file stays: another process may hold it, and a new file would be a second lock.
fn remove_socket(socket: &Path) {
    for ext in ["node", "log"] {
        let _ = std::fs::remove_file(socket.with_extension(ext));
    }
    let _ = std::fs::remove_file(socket);
}

/// Asks the masters of medic processes that no longer exist to exit, and removes their
/// directories. A killed medic cannot close its own masters; its successor does.
pub(crate) fn close_orphaned_masters(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let sockets = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path())
            .filter(|p| p.extension().is_none());
        for socket in sockets {
            exit_master(&socket);
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_others_can_write_is_emptied_and_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::write(dir.join("planted"), "").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert!(!dir.join("planted").exists());
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_link_in_place_of_the_directory_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let dir = tmp.path().join("p");
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
        assert!(elsewhere.exists(), "the link's target is left alone");
    }

    #[test]
    fn a_plain_file_or_an_open_socket_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(!socket_is_trusted(&file));
        assert!(!file.exists(), "removed");
        let sock = tmp.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(socket_is_trusted(&sock));
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!socket_is_trusted(&sock));
        assert!(!sock.exists(), "removed");
    }
}
