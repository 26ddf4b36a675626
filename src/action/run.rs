//! `run`: a command on the operator's machine, through `sh -c`.
//!
//! ```yaml
//! run: "systemctl is-active {{ unit }}"     # values are shell-quoted
//! ```
//!
//! 1. The command runs in its own process group, so a timeout or Ctrl-C stops all of it
//!    (SIGTERM, then SIGKILL after a grace period); it also dies with medic, SIGKILL included
//!    (a watchdog kills the group; the command starts only once its watchdog runs).
//! 2. Each stdout/stderr line goes to the phase log as it arrives.
//! 3. The result is `{stdout, stderr, exit_code, json}`; `json` is stdout parsed as JSON, if it is.

use std::process::Stdio;
use std::time::Duration;

use marked_yaml::Node;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{cancelled, Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream};
use crate::procedure::source::{Reader, TemplateKind};

/// Output kept in memory per stream for results and error messages.
const MAX_CAPTURED: usize = 8 * 1024 * 1024;
/// How long a cancelled command gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub command: String,
}

impl Action for RunSpec {
    const KIND: &'static str = "run";
    const IDEMPOTENT: bool = false;
    const INLINE: bool = false;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let s = reader.scalar(node, "run")?;
        if s.as_str().trim().is_empty() {
            reader.error(
                &crate::procedure::source::start_span(node),
                "run needs a command",
            );
            return None;
        }
        Some(RunSpec {
            command: reader.template(s, TemplateKind::Shell),
        })
    }

    fn target(&self) -> Option<String> {
        Some("local".to_string())
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        Ok(vec![format!(
            "run locally: {}",
            scope.render("run", &self.command, true)?
        )])
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let command = ctx.scope.render("run", &self.command, true)?;
        let out = run_shell(&command, ctx, true).await?;
        out.into_result()
    }
}

/// What a finished shell command left behind.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The last few lines of stderr (or stdout when stderr is empty), for error messages.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    pub fn to_json(&self) -> serde_json::Value {
        let json = serde_json::from_str::<serde_json::Value>(self.stdout.trim()).ok();
        serde_json::json!({
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "json": json,
        })
    }

    pub fn into_result(self) -> Result<ActionOutput, ActionError> {
        match (self.exit_code, self.signal) {
            (Some(0), _) => Ok(ActionOutput {
                result: self.to_json(),
                summary: None,
            }),
            (Some(code), _) => Err(ActionError::CommandFailed {
                code,
                stderr_tail: self.tail(),
            }),
            (None, signal) => Err(ActionError::CommandKilled {
                signal: signal.unwrap_or(0),
            }),
        }
    }
}

/// Kills the whole process group if the command is abandoned (timeout, panic, dropped future).
///
/// It also owns a watchdog: a small `sh` reading a pipe whose write end only this process
/// holds. If medic dies, even by SIGKILL, the pipe closes and the watchdog kills the group, so
/// no command outlives its executor and runs on beside a resumed one.
struct GroupGuard {
    pgid: i32,
    armed: bool,
    _watchdog: Option<(tokio::process::Child, tokio::process::ChildStdin)>,
}

fn spawn_watchdog(pgid: i32) -> Option<(tokio::process::Child, tokio::process::ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read _medic_alive; kill -s KILL -- -{pgid} 2>/dev/null"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

impl GroupGuard {
    fn signal(&self, sig: i32) {
        // SAFETY: killpg only sends a signal; the group id is our own child's.
        unsafe {
            libc::killpg(self.pgid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Runs `command` through `sh -c`; with `stream`, each line also goes to the phase output.
pub async fn run_shell(
    command: &str,
    ctx: &ActionCtx<'_>,
    stream: bool,
) -> Result<CommandOutput, ActionError> {
    // The command waits for a go-ahead on stdin, sent only once its watchdog runs, so it can
    // never run unwatched; if medic dies before that, it exits without running.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("read _medic_go || exit 125; exec sh -c \"$0\" </dev/null")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it makes the command die with medic (SIGKILL included).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ActionError::Spawn {
        command: command.to_string(),
        source,
    })?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut guard = GroupGuard {
        pgid,
        armed: true,
        _watchdog: spawn_watchdog(pgid),
    };
    if let Some(mut go) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = go.write_all(b"go\n").await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(Stream, String)>();
    let readers = [
        child
            .stdout
            .take()
            .map(|o| read_lines(o, Stream::Stdout, tx.clone())),
        child
            .stderr
            .take()
            .map(|e| read_lines(e, Stream::Stderr, tx.clone())),
    ];
    drop(tx);
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut keep = |stream_kind: Stream, line: &str| {
        let buf = if stream_kind == Stream::Stdout {
            &mut stdout
        } else {
            &mut stderr
        };
        if buf.len() < MAX_CAPTURED {
            buf.push_str(line);
            buf.push('\n');
        }
        if stream {
            ctx.emit(stream_kind, line);
        }
    };
    let mut cancel_reason = None;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((s, line)) => keep(s, &line),
                None => break,
            },
            reason = cancelled(&ctx.cancel), if cancel_reason.is_none() => {
                guard.signal(libc::SIGTERM);
                cancel_reason = Some(reason);
                // Give it a grace period, then kill the whole group.
                let deadline = tokio::time::sleep(STOP_GRACE);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        msg = rx.recv() => match msg {
                            Some((s, line)) => keep(s, &line),
                            None => break,
                        },
                        _ = &mut deadline => { guard.signal(libc::SIGKILL); break; }
                    }
                }
                break;
            }
        }
    }
    let status = child.wait().await;
    guard.armed = false;
    // Anything the command left in its group dies with it.
    guard.signal(libc::SIGKILL);
    for r in readers.into_iter().flatten() {
        r.abort();
    }
    if let Some(reason) = cancel_reason {
        return Err(ActionError::Cancelled(reason));
    }
    let status = status.map_err(|source| ActionError::Spawn {
        command: command.to_string(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(CommandOutput {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    })
}

fn read_lines<R>(
    reader: R,
    stream: Stream,
    tx: mpsc::UnboundedSender<(Stream, String)>,
) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send((stream, line)).is_err() {
                break;
            }
        }
    })
}
