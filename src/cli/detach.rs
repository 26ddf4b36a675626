//! `--detach`: the executor runs in its own session, apart from the terminal that started it.
//!
//! 1. The starter re-runs medic (`std::env::current_exe`) with [`DETACHED_ENV`] set, in a new
//!    session (`setsid`), stdin from `/dev/null` and stdout and stderr into one pipe.
//! 2. The detached executor does everything a foreground run does; once its run got past
//!    the lease and the safety guards (its first phase event, [`ReleaseOnStart`]) it points
//!    its output at `/dev/null`, which closes the pipe.
//! 3. The starter reads the pipe to its end: if it ends with the executor's "running" line,
//!    it prints the operation, the pid and how to follow and stop it, and returns 0; if the
//!    executor ended before that (a refusal, a bad argument), it passes on its output and
//!    exit code.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};

use serde_json::json;

use super::{print_json, CliError, Ctx};
use crate::events::{Event, EventSink};

/// Set in the environment of a detached executor.
const DETACHED_ENV: &str = "MEDIC_DETACHED";

/// The most of a detached executor's early output the starter keeps.
const KEEP_BYTES: usize = 64 * 1024;

/// Whether this process is a detached executor.
pub(super) fn is_detached() -> bool {
    std::env::var_os(DETACHED_ENV).is_some()
}

/// What a detached executor writes last to its starter: it runs.
const RUNNING: &[u8] = b"\0medic: detached executor running\n";

/// Tells the starter the run is under way, then leaves the starter's pipe.
fn release_starter() {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(RUNNING);
    let _ = out.flush();
    drop(out);
    super::signals::leave_terminal();
}

/// The sink of a detached executor: lets its starter return at the first event past the
/// guards (a refusal ends the run before that, and the starter passes the refusal on).
pub(super) struct ReleaseOnStart {
    inner: Arc<dyn EventSink>,
    released: Once,
}

impl ReleaseOnStart {
    pub(super) fn wrap(inner: Arc<dyn EventSink>) -> Arc<dyn EventSink> {
        if !is_detached() {
            return inner;
        }
        Arc::new(ReleaseOnStart {
            inner,
            released: Once::new(),
        })
    }
}

impl EventSink for ReleaseOnStart {
    fn emit(&self, event: &Event) {
        self.inner.emit(event);
        if !matches!(event, Event::RunStarted { .. } | Event::Forced { .. }) {
            self.released.call_once(release_starter);
        }
    }
}

/// Starts `args` (medic's arguments, without the program) detached, for operation `op`, and
/// reports it.
pub(super) fn run_detached(ctx: &Ctx, args: &[OsString], op: &str) -> Result<i32, CliError> {
    let exe = std::env::current_exe().map_err(|e| {
        CliError::usage(format!("cannot find medic's own executable to detach: {e}"))
    })?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: setsid and dup2 are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // One pipe for both streams: it closes when the executor lets the starter go.
            if libc::dup2(1, 2) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| CliError {
        code: 1,
        message: format!("cannot start the detached executor: {e}"),
    })?;
    let mut early = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut buf = [0u8; 8192];
        let mut out = out;
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = KEEP_BYTES.saturating_sub(early.len());
            early.extend_from_slice(&buf[..n.min(room)]);
        }
    }
    let pid = child.id();
    use std::io::Write as _;
    match early.strip_suffix(RUNNING) {
        Some(said) => {
            let _ = std::io::stderr().write_all(said);
            report(ctx, op, pid);
            Ok(0)
        }
        None => {
            // It ended before its run got under way (a refusal, an error): pass that on.
            let _ = std::io::stderr().write_all(&early);
            let status = child.wait().map_err(|e| CliError {
                code: 1,
                message: format!("cannot wait for the detached executor: {e}"),
            })?;
            Ok(status.code().unwrap_or(1))
        }
    }
}

fn report(ctx: &Ctx, op: &str, pid: u32) {
    let follow = format!("medic plan --tail --operation {op}");
    let stop = format!("medic plan stop --operation {op}");
    if ctx.json() {
        print_json(&json!({
            "operation": op,
            "pid": pid,
            "detached": true,
            "follow": follow,
            "stop": stop,
        }));
        return;
    }
    println!(
        "{} operation {} runs detached in pid {pid} (its own session: closing this terminal does not stop it)",
        console::style("▶").green(),
        console::style(op).bold()
    );
    println!("  follow it:  {follow}");
    println!("  stop it:    {stop}  (add --now to exit at once)");
    println!("  afterwards: medic plan history --operation {op}");
}
