//! `run`: a command on the operator's machine, through `sh` (the command is passed on stdin).
//!
//! ```yaml
//! run: "systemctl is-active {{ unit }}"     # values are shell-quoted
//! ```
//!
//! 1. The command runs in its own process group, so a timeout or Ctrl-C stops all of it
//!    (SIGTERM, then SIGKILL after a grace period); it also dies with medic, SIGKILL included
//!    (a watchdog kills the group; the command starts only once its watchdog runs). Neither
//!    is in medic's process group, so a signal to that group (a closing terminal's SIGHUP, a
//!    `kill -- -PGID`) reaches only medic, which decides: it keeps watching the command
//!    (hangup) or stops it (terminate); if medic dies, the watchdog still kills the command.
//! 2. Each stdout/stderr line goes to the phase log as it arrives (lines longer than 64 KiB are
//!    cut; see `output`).
//! 3. The result is `{stdout, stderr, exit_code, json, truncated}`: the first MiB of each stream;
//!    `json` is stdout parsed as JSON, if it is and was kept whole.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use marked_yaml::Node;
use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use tokio::process::Command;
use tokio::sync::mpsc;

use super::output::{read_line, Captured};
use super::{cancelled, Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream};
use crate::source::{Fields, Reader, TemplateKind};

/// How long a cancelled command gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub command: String,
    /// `run: {command: ..., env: {TOKEN: "{{ token }}"}}`: exported in the script on stdin, so
    /// a secret given to a command this way is in no command line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// Reads `env:` (variable names to text templates), for `run` and `ssh`.
pub(crate) fn read_env(node: &Node, reader: &mut Reader, what: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Node::Mapping(map) = node else {
        reader.error(
            &crate::source::start_span(node),
            format!("{what} must map variable names to values"),
        );
        return env;
    };
    for (k, v) in map.iter() {
        let name = k.as_str();
        let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            reader.error(
                k.span(),
                format!("{what} name `{name}` is not a valid variable name"),
            );
        }
        if let Some(s) = reader.scalar(v, &format!("{what} value")) {
            env.insert(name.to_string(), reader.template(s, TemplateKind::Text));
        }
    }
    env
}

/// `export K='V'` lines (each value quoted as one word) followed by `command`.
pub(crate) fn with_exports(env: &[(String, String)], command: &str, separator: &str) -> String {
    let mut out = String::new();
    for (k, v) in env {
        out.push_str(&format!(
            "export {k}={}{separator}",
            crate::template::shell_quote(v)
        ));
    }
    out.push_str(command);
    out
}

impl RunSpec {
    fn rendered(&self, scope: &RenderScope<'_>, separator: &str) -> Result<String, ActionError> {
        let command = scope.render("run", &self.command, true)?;
        let mut env = Vec::new();
        for (k, v) in &self.env {
            env.push((k.clone(), scope.render("run.env", v, false)?));
        }
        Ok(with_exports(&env, &command, separator))
    }
}

impl Action for RunSpec {
    const KIND: &'static str = "run";
    const IDEMPOTENT: bool = false;
    const INLINE: bool = false;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let (command_node, env) = match node {
            Node::Mapping(_) => {
                let fields = Fields::new(node, "run", &["command", "env"], reader)?;
                let Some(command) = fields.get("command") else {
                    reader.error(
                        fields.span(),
                        "run as a mapping needs `command:` (and optionally `env:`)",
                    );
                    return None;
                };
                let env = fields
                    .get("env")
                    .map(|n| read_env(n, reader, "run.env"))
                    .unwrap_or_default();
                (command, env)
            }
            _ => (node, BTreeMap::new()),
        };
        let s = reader.scalar(command_node, "run")?;
        if s.as_str().trim().is_empty() {
            reader.error(
                &crate::source::start_span(command_node),
                "run needs a command",
            );
            return None;
        }
        Some(RunSpec {
            command: reader.template(s, TemplateKind::Shell),
            env,
        })
    }

    fn target(&self) -> Option<String> {
        Some("local".to_string())
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        Ok(vec![format!(
            "run locally: {}",
            self.rendered(scope, "; ")?
        )])
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let command = self.rendered(ctx.scope, "\n")?;
        let out = run_shell(&command, ctx, true).await?;
        out.into_result()
    }
}

/// What a finished shell command left behind.
#[derive(Debug, Clone)]
pub(crate) struct CommandOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl CommandOutput {
    pub(crate) fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The last few lines of stderr (or stdout when stderr is empty), for error messages.
    pub(crate) fn tail(&self) -> String {
        match self.stderr.tail() {
            t if t.is_empty() => self.stdout.tail(),
            t => t,
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "exit_code": self.exit_code,
            "stdout": self.stdout.text,
            "stderr": self.stderr.text,
            "json": self.stdout.json(),
            "truncated": self.stdout.truncated || self.stderr.truncated,
        })
    }

    pub(crate) fn into_result(self) -> Result<ActionOutput, ActionError> {
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
/// no command outlives its executor and runs on beside a resumed one. The watchdog has its own
/// process group and ignores the signals a terminal sends, so what stops medic's group (even
/// SIGKILL to all of it) never takes the watchdog with it and leaves the command unwatched.
struct GroupGuard {
    pgid: i32,
    armed: bool,
    _watchdog: Option<(tokio::process::Child, tokio::process::ChildStdin)>,
}

fn spawn_watchdog(pgid: i32) -> Option<(tokio::process::Child, tokio::process::ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' HUP INT TERM QUIT; read _medic_alive; kill -s KILL -- -{pgid} 2>/dev/null"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
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

/// A shell program that reads a script from stdin and runs it with stdin from `/dev/null`, so
/// a command (and any secret in it) is never on a command line, locally or on a node. A script
/// that did not arrive whole (no end marker) does not run at all: exit 125.
pub(crate) const SCRIPT_ON_STDIN: &str = "_medic_s=$(cat) && [ \"${_medic_s%__medic_eof__}\" != \"$_medic_s\" ] || exit 125; exec </dev/null; eval \"${_medic_s%__medic_eof__}\"";

/// What to write to the stdin of [`SCRIPT_ON_STDIN`] to run `script`.
pub(crate) fn script_for_stdin(script: &str) -> String {
    format!("{script}\n__medic_eof__")
}

/// Starts `sh` in its own process group with its watchdog, and sends it the go-ahead and
/// `command` on stdin.
fn spawn_watched(command: &str) -> Result<(tokio::process::Child, GroupGuard), ActionError> {
    // The command waits for a go-ahead on stdin, sent only once its watchdog runs, so it can
    // never run unwatched; if medic dies before that, it exits without running.
    // The command itself travels on stdin, never in argv: /proc/PID/cmdline is readable by every
    // local user, and the command may hold a secret.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("read _medic_go || exit 125; {SCRIPT_ON_STDIN}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("MEDIC_DETACHED")
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it makes the command die with medic (SIGKILL included).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|source| ActionError::Spawn { source })?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let guard = GroupGuard {
        pgid,
        armed: true,
        _watchdog: spawn_watchdog(pgid),
    };
    if let Some(mut go) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let script = format!("go\n{}", script_for_stdin(command));
        // Written by a task: a long script must not wait for the output readers below.
        tokio::spawn(async move {
            let _ = go.write_all(script.as_bytes()).await;
        });
    }
    Ok((child, guard))
}

/// Runs `command` through `sh`; with `stream`, each line also goes to the phase output.
pub(crate) async fn run_shell(
    command: &str,
    ctx: &ActionCtx<'_>,
    stream: bool,
) -> Result<CommandOutput, ActionError> {
    let (mut child, mut guard) = spawn_watched(command)?;
    // Bounded, so a command writing faster than the phase log takes its lines waits on its
    // pipe instead of piling lines up here.
    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(256);
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
    let mut stdout = Captured::default();
    let mut stderr = Captured::default();
    let mut keep = |stream_kind: Stream, line: &str| {
        if stream_kind == Stream::Stdout {
            stdout.push_line(line);
        } else {
            stderr.push_line(line);
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
    let status = status.map_err(|source| ActionError::Spawn { source })?;
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
    tx: mpsc::Sender<(Stream, String)>,
) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        while let Ok(Some(line)) = read_line(&mut reader, &mut buf).await {
            if tx.send((stream, line)).await.is_err() {
                break;
            }
        }
    })
}
