//! The processes the drill starts (etcd members, sshd, the API emulator): recorded by pid and
//! start time, started detached, stopped without ever signalling a reused pid; found by their
//! command line when a crashed command never recorded them.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{setup, DrillError, Failure};
use crate::store::process_start_ticks;

/// A process the drill started: its pid and start time (so a reused pid is never mistaken).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
}

impl Proc {
    pub(super) fn of(pid: u32) -> Result<Proc, DrillError> {
        let start_ticks = process_start_ticks(pid).ok_or(Failure::ExitedAtStart { pid })?;
        Ok(Proc { pid, start_ticks })
    }

    pub(crate) fn alive(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }

    pub(super) fn signal(&self, sig: i32) {
        if self.alive() {
            // SAFETY: kill(2) with a pid we checked belongs to the process we started.
            unsafe {
                libc::kill(self.pid as i32, sig);
            }
        }
    }

    /// SIGTERM (or SIGKILL), then SIGKILL after `grace`; waits until the process is gone
    /// (blocking: for the drill's synchronous commands).
    pub(crate) fn stop(&self, grace: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(gone) = self.stopped(started, grace) {
                return gone;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&self) -> bool {
        self.signal(libc::SIGKILL);
        self.stop(Duration::ZERO)
    }

    /// [`Proc::kill`] for async code: waits without blocking the runtime.
    pub(super) async fn kill_async(&self) -> bool {
        self.signal(libc::SIGKILL);
        self.signal(libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(gone) = self.stopped(started, Duration::ZERO) {
                return gone;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One check of a stop begun at `started`: `Some(true)` once the process is gone,
    /// `Some(false)` when it outlived `grace` and SIGKILL by 5 seconds, `None` to wait on
    /// (SIGKILL is sent once `grace` has passed).
    fn stopped(&self, started: Instant, grace: Duration) -> Option<bool> {
        if !self.alive() {
            return Some(true);
        }
        if started.elapsed() > grace {
            self.signal(libc::SIGKILL);
        }
        if started.elapsed() > grace + Duration::from_secs(5) {
            return Some(false);
        }
        None
    }
}

/// Spawns a process in its own session, stdin from /dev/null and output to `log`.
pub(super) fn spawn_detached(cmd: &mut Command, log: std::fs::File) -> std::io::Result<u32> {
    let err = log.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // SAFETY: setsid is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // The child is left to run; dropping the handle does not kill it. It is reaped by
    // whoever outlives it (init once this process exits).
    drop(child);
    Ok(pid)
}

/// Runs a tool to completion (without blocking the runtime); its stderr is the error.
pub(super) async fn run_tool(
    cmd: &mut tokio::process::Command,
    what: &'static str,
) -> Result<(), DrillError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| Failure::Start { what, source })?;
    if !out.status.success() {
        return Err(Failure::Tool {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
        .into());
    }
    Ok(())
}

/// Processes whose command line mentions `dir` (what the drill started, found without its
/// records, e.g. an etcd a crashed command started but never recorded).
pub(super) fn processes_mentioning(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Only the kinds of process the drill starts: an operator's medic run that merely
        // names a file in the drill directory (`--set-file token=…`) is left alone.
        let program = cmdline.split(' ').next().unwrap_or_default();
        let drill_kind = program.ends_with("etcd")
            || program.ends_with("sshd")
            || cmdline.contains(" drill apiserver ");
        if drill_kind && cmdline.contains(&needle) && process_start_ticks(pid).is_some() {
            out.push((pid, cmdline.trim().to_string()));
        }
    }
    out
}

pub(super) fn port_free_on(addresses: &[String], port: u16) -> bool {
    addresses
        .iter()
        .all(|a| std::net::TcpListener::bind((a.as_str(), port)).is_ok())
}

/// A port free on every address (and different from `taken`).
pub(super) fn free_port(addresses: &[String], taken: &[u16]) -> Result<u16, DrillError> {
    for _ in 0..200 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(setup("find a free port"))?
            .port();
        if !taken.contains(&port) && port_free_on(addresses, port) {
            return Ok(port);
        }
    }
    Err(Failure::NoFreePort.into())
}

/// Loopback addresses for the nodes: a block of 127.x.y.z not used by another drill (whose
/// addresses would still be listening).
pub(super) fn node_addresses(count: usize) -> Vec<String> {
    let base = 100 + (std::process::id() % 100) as usize;
    (0..count)
        .map(|i| format!("127.0.{}.{}", base, 11 + i))
        .collect()
}
