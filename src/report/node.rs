//! The `system` group: each node's commands over SSH, through the shared [`SshPool`] (kept
//! masters are reused), nodes at once up to a bound, a few commands at once per node, each
//! with a timeout. Output is read as it comes and only its tail is held; an unreachable node
//! is one manifest line and its commands are not tried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};

use super::bundle::Collected;
use super::Progress;
use crate::action::ssh::RemoteCommand;
use crate::inventory::NodeEntry;
use crate::ssh::SshPool;

/// Commands run at once on one node (channels over its master).
const PER_NODE: usize = 4;
/// How much of a command's stderr the manifest keeps.
const STDERR_TAIL: usize = 2048;
/// Held beyond the file cap, so that redaction sees a secret whole before the cap cuts.
pub(crate) const MARGIN: usize = 64 * 1024;

/// What every node job shares.
pub(crate) struct NodeJob {
    pub(crate) pool: Arc<SshPool>,
    /// `(command, path)` pairs, the window already in the command.
    pub(crate) commands: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) hold: usize,
    pub(crate) nodes_at_once: Arc<Semaphore>,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Reads a stream to its end keeping only the last `hold` bytes.
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, hold: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > hold * 2 {
            out.drain(..out.len() - hold);
            cut = true;
        }
    }
    if out.len() > hold {
        out.drain(..out.len() - hold);
        cut = true;
    }
    (out, cut)
}

/// The remote command's exit code as the shell gave it. openssh reports a remote exit 127
/// as an error (`Remote` with `NotFound`) rather than a status: it is still exit code 127.
/// An error: the command ended without an exit code (a signal) or the channel broke.
fn exit_code(status: Result<std::process::ExitStatus, openssh::Error>) -> Result<i32, String> {
    match status {
        Ok(s) => s
            .code()
            .ok_or_else(|| format!("ended without an exit code ({s})")),
        Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(127),
        Err(openssh::Error::RemoteProcessTerminated) => {
            Err("the command was terminated (a signal) without an exit code".to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Runs one command on `node`, its output bounded and its time limited.
async fn run_one(
    pool: &SshPool,
    node: &NodeEntry,
    session: Arc<openssh::Session>,
    command: &str,
    path: &str,
    timeout: Duration,
    hold: usize,
) -> Collected {
    let started = Instant::now();
    let mut c = Collected {
        source: "node",
        node: Some(node.name.clone()),
        command: command.to_string(),
        path: Some(format!("nodes/{}/{path}", node.name)),
        ..Default::default()
    };
    let remote = RemoteCommand::new(command, node.ssh.sudo.unwrap_or(false), &[]);
    let work = async {
        let spawn = |s: Arc<openssh::Session>| {
            let line = remote.line.clone();
            async move {
                s.arc_raw_command(line)
                    .stdin(openssh::Stdio::piped())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::piped())
                    .spawn()
                    .await
            }
        };
        let mut child = match spawn(session).await {
            Ok(child) => child,
            Err(_) => {
                let fresh = pool.reconnect(node).await.map_err(|e| e.to_string())?;
                spawn(fresh)
                    .await
                    .map_err(|e| format!("start command: {e}"))?
            }
        };
        if let Some(mut stdin) = child.stdin().take() {
            use tokio::io::AsyncWriteExt;
            let script = crate::action::run::script_for_stdin(&remote.script);
            tokio::spawn(async move {
                let _ = stdin.write_all(script.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let (out, err) = tokio::join!(
            read_tail(child.stdout().take(), hold),
            read_tail(child.stderr().take(), STDERR_TAIL)
        );
        let status = child.wait().await;
        Ok::<_, String>((out, err, status))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            c.timed_out = true;
            c.error = Some(format!("timed out after {}s", timeout.as_secs_f64()));
        }
        Ok(Err(e)) => c.error = Some(e),
        Ok(Ok(((out, cut), (err, _), status))) => {
            c.data = out;
            c.truncated = cut;
            let err = String::from_utf8_lossy(&err).trim().to_string();
            c.stderr_tail = (!err.is_empty()).then_some(err);
            match exit_code(status) {
                Ok(0) => c.exit_code = Some(0),
                Ok(code) => {
                    c.exit_code = Some(code);
                    c.error = Some(match code {
                        127 => "exit code 127: command not found on the node".to_string(),
                        _ => format!("exit code {code}"),
                    });
                }
                Err(e) => c.error = Some(e),
            }
        }
    }
    c.duration_ms = started.elapsed().as_millis() as u64;
    c
}

/// Collects every command on `node`, sending each result to `tx` as it finishes.
pub(crate) async fn collect_node(
    job: Arc<NodeJob>,
    node: NodeEntry,
    tx: mpsc::Sender<Collected>,
    progress: Progress,
) {
    let _turn = job.nodes_at_once.clone().acquire_owned().await;
    let bar = progress.node(&node.name, job.commands.len());
    let started = Instant::now();
    let session = match tokio::time::timeout(job.timeout, job.pool.session(&node)).await {
        Ok(Ok(s)) => s,
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no connection within {}s", job.timeout.as_secs_f64()),
            };
            bar.finish_with_message(format!("unreachable: {error}"));
            let _ = tx
                .send(Collected {
                    source: "node",
                    node: Some(node.name.clone()),
                    command: format!("ssh {}", crate::ssh::describe_destination(&node)),
                    unreachable: true,
                    error: Some(error),
                    duration_ms: started.elapsed().as_millis() as u64,
                    ..Default::default()
                })
                .await;
            return;
        }
    };
    let channels = Arc::new(Semaphore::new(PER_NODE));
    let mut tasks = tokio::task::JoinSet::new();
    for (command, path) in job.commands.clone() {
        let (job, node, tx, session, channels, bar) = (
            job.clone(),
            node.clone(),
            tx.clone(),
            session.clone(),
            channels.clone(),
            bar.clone(),
        );
        tasks.spawn(async move {
            let _slot = channels.acquire_owned().await;
            if job.stop.load(Ordering::Relaxed) {
                return;
            }
            let c = run_one(
                &job.pool,
                &node,
                session,
                &command,
                &path,
                job.timeout,
                job.hold,
            )
            .await;
            bar.inc(1);
            let _ = tx.send(c).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    bar.finish_with_message("done");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_remote_127_is_exit_code_127_and_other_codes_are_kept() {
        let not_found = openssh::Error::Remote(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "remote command not found",
        ));
        assert_eq!(exit_code(Err(not_found)), Ok(127));
        assert_eq!(
            exit_code(Ok(std::process::ExitStatus::from_raw(3 << 8))),
            Ok(3)
        );
        assert_eq!(exit_code(Ok(std::process::ExitStatus::from_raw(0))), Ok(0));
        assert!(exit_code(Err(openssh::Error::RemoteProcessTerminated)).is_err());
        assert!(exit_code(Ok(std::process::ExitStatus::from_raw(9))).is_err());
    }
}
