//! `ssh`: a command on cluster nodes over SSH, fanned out to a node, a list, or a role.
//!
//! ```yaml
//! ssh: {on: cp-1, run: "systemctl stop kubelet"}
//! ssh: {on: [cp-1, cp-2], run: "...", sudo: true, env: {KUBECONFIG: /etc/kubernetes/admin.conf}}
//! ssh: {on: {role: worker}, run: "...", max_parallel: 10, timeout: 2m}
//! ```
//!
//! 1. `on:` is rendered and resolved against the inventory when the phase runs.
//! 2. The remote command line is a fixed `[sudo -n --] sh -c '<read the script from stdin>'`;
//!    the script (`export K=V` lines for `env:`, then `run:`, every value quoted) goes on stdin,
//!    so no value is ever on a command line in the node's process list. The dry-run shows the
//!    script, per node, with the user it runs as.
//! 3. Nodes run concurrently (up to `max_parallel`) over the pool's master connections; each
//!    output line goes to the phase log prefixed with `[node]`.
//! 4. The result has per-node stdout, stderr, exit code and duration (and `json` when stdout is
//!    JSON); with one node its fields are also at the top level, for `capture`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marked_yaml::Node;
use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use tokio::sync::{mpsc, Semaphore};

use super::output::{read_line, Captured};
use super::run::{script_for_stdin, with_exports, SCRIPT_ON_STDIN};
use super::{cancelled, Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream};
use crate::inventory::{NodeEntry, Selector};
use crate::source::{start_span, Fields, Reader, TemplateKind};
use crate::ssh::{describe_destination, SshPool};
use crate::template::shell_quote;

/// `on:` as written: node names (templates), or a role (template).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSpec {
    Nodes(Vec<String>),
    Role(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SshSpec {
    pub on: OnSpec,
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
}

/// What runs on a node: a fixed command line, and the script it reads from stdin.
///
/// The script (the `run:` command, preceded by `export` lines for `env:`) never appears on a
/// command line, so the node's process list shows no value of it, secret or not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteCommand {
    pub line: String,
    pub script: String,
    /// The script on one line, for dry-runs.
    shown: String,
    sudo: bool,
}

impl RemoteCommand {
    pub(crate) fn new(run: &str, sudo: bool, env: &[(String, String)]) -> Self {
        let wrapper = format!("sh -c {}", shell_quote(SCRIPT_ON_STDIN));
        let line = if sudo {
            format!("sudo -n -- {wrapper}")
        } else {
            wrapper
        };
        RemoteCommand {
            line,
            script: with_exports(env, run, "\n"),
            shown: with_exports(env, run, "; "),
            sudo,
        }
    }

    /// For dry-runs: who runs which script (`export` lines shown on one line with the command).
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}sh, script on stdin: {}",
            if self.sudo { "sudo -n -- " } else { "" },
            self.shown
        )
    }
}

impl SshSpec {
    /// Renders `on:` into a selector: a template that is one `{{ expression }}` may give a list.
    fn selector(&self, scope: &RenderScope<'_>) -> Result<Selector, ActionError> {
        match &self.on {
            OnSpec::Role(r) => Ok(Selector::Role(scope.render("ssh.on.role", r, false)?)),
            OnSpec::Nodes(items) => {
                let mut names = Vec::new();
                for item in items {
                    let whole_expression = item.trim().starts_with("{{")
                        && item.trim().ends_with("}}")
                        && item.matches("{{").count() == 1;
                    if whole_expression {
                        let value = scope.eval("ssh.on", item)?;
                        match serde_json::to_value(&value).unwrap_or_default() {
                            serde_json::Value::Array(list) => {
                                for v in list {
                                    names.push(match v {
                                        serde_json::Value::String(s) => s,
                                        serde_json::Value::Object(m) => m
                                            .get("name")
                                            .and_then(|n| n.as_str())
                                            .unwrap_or_default()
                                            .to_string(),
                                        other => other.to_string(),
                                    });
                                }
                            }
                            serde_json::Value::String(s) => names.push(s),
                            other => names.push(other.to_string()),
                        }
                    } else {
                        names.push(scope.render("ssh.on", item, false)?);
                    }
                }
                Ok(Selector::Nodes(names))
            }
        }
    }

    fn rendered(
        &self,
        scope: &RenderScope<'_>,
    ) -> Result<(String, Vec<(String, String)>), ActionError> {
        let run = scope.render("ssh.run", &self.run, true)?;
        let mut env = Vec::new();
        for (k, v) in &self.env {
            env.push((k.clone(), scope.render("ssh.env", v, false)?));
        }
        Ok((run, env))
    }

    fn nodes<'i>(
        &self,
        scope: &RenderScope<'i>,
    ) -> Result<(Selector, Vec<NodeEntry>), ActionError> {
        let selector = self.selector(scope)?;
        let Some(inventory) = scope.inventory else {
            return Err(ActionError::Failed {
                message: "ssh needs an inventory; pass --inventory FILE (or set MEDIC_INVENTORY)"
                    .into(),
            });
        };
        let nodes = inventory
            .select(&selector)
            .map_err(|message| ActionError::Failed { message })?
            .into_iter()
            .cloned()
            .collect();
        Ok((selector, nodes))
    }
}

impl Action for SshSpec {
    const KIND: &'static str = "ssh";
    const IDEMPOTENT: bool = false;
    const INLINE: bool = false;
    const NEEDS_INVENTORY: bool = true;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let fields = Fields::new(
            node,
            "ssh",
            &["on", "run", "sudo", "env", "timeout", "max_parallel"],
            reader,
        )?;
        let on = match fields.get("on") {
            Some(Node::Scalar(s)) => OnSpec::Nodes(vec![reader.template(s, TemplateKind::Text)]),
            Some(Node::Sequence(items)) => OnSpec::Nodes(
                items
                    .iter()
                    .filter_map(|i| reader.scalar(i, "ssh.on item"))
                    .map(|s| s.as_str().to_string())
                    .collect(),
            ),
            Some(n @ Node::Mapping(_)) => {
                let f = Fields::new(n, "ssh.on", &["role"], reader)?;
                match f.get("role").and_then(|r| reader.scalar(r, "ssh.on.role")) {
                    Some(s) => OnSpec::Role(reader.template(s, TemplateKind::Text)),
                    None => {
                        reader.error(
                            &start_span(n),
                            "ssh.on as a mapping needs `role:`, e.g. `on: {role: worker}`",
                        );
                        return None;
                    }
                }
            }
            None => {
                reader.error(
                    fields.span(),
                    "ssh needs `on:` (a node, a list of nodes, or {role: NAME})",
                );
                return None;
            }
        };
        let run = match fields.get("run") {
            Some(n) => {
                let s = reader.scalar(n, "ssh.run")?;
                if s.as_str().trim().is_empty() {
                    reader.error(&start_span(n), "ssh.run needs a command");
                    return None;
                }
                reader.template(s, TemplateKind::Shell)
            }
            None => {
                reader.error(
                    fields.span(),
                    "ssh needs `run:`, the command to run on the nodes",
                );
                return None;
            }
        };
        let sudo = fields.get("sudo").and_then(|n| reader.bool(n, "ssh.sudo"));
        let env = fields
            .get("env")
            .map(|n| super::run::read_env(n, reader, "ssh.env"))
            .unwrap_or_default();
        let timeout_secs = fields
            .get("timeout")
            .and_then(|n| reader.duration(n, "ssh.timeout"));
        let max_parallel = match fields
            .get("max_parallel")
            .map(|n| (n, reader.uint(n, "ssh.max_parallel")))
        {
            Some((n, Some(0))) => {
                reader.error(n.span(), "ssh.max_parallel must be at least 1");
                None
            }
            Some((_, v)) => v.map(|v| v as usize),
            None => None,
        };
        Some(SshSpec {
            on,
            run,
            sudo,
            env,
            timeout_secs,
            max_parallel,
        })
    }

    fn check_targets(&self, scope: &RenderScope<'_>) -> Result<(), ActionError> {
        let on: Vec<&String> = match &self.on {
            OnSpec::Role(r) => vec![r],
            OnSpec::Nodes(items) => items.iter().collect(),
        };
        match self.selector(scope) {
            // A value captured at run time cannot be checked yet.
            Ok(_) if on.iter().any(|t| scope.uses_pending(t)) => Ok(()),
            Ok(_) => self.nodes(scope).map(|_| ()),
            Err(_) => Ok(()),
        }
    }

    fn touches(&self, scope: &RenderScope<'_>) -> Vec<super::Touch> {
        let pending = match &self.on {
            OnSpec::Role(r) => scope.uses_pending(r),
            OnSpec::Nodes(items) => items.iter().any(|t| scope.uses_pending(t)),
        };
        if pending {
            return Vec::new();
        }
        let names = match (self.nodes(scope), self.selector(scope)) {
            (Ok((_, nodes)), _) => nodes.into_iter().map(|n| n.name).collect(),
            // No inventory at hand: the names as written still say which nodes.
            (Err(_), Ok(Selector::Nodes(names))) => names,
            _ => Vec::new(),
        };
        names.into_iter().map(super::Touch::Node).collect()
    }

    fn target(&self) -> Option<String> {
        Some(match &self.on {
            OnSpec::Nodes(n) => n.join(","),
            OnSpec::Role(r) => format!("role={r}"),
        })
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        let (run, env) = self.rendered(scope)?;
        match self.nodes(scope) {
            Ok((_, nodes)) => Ok(nodes
                .iter()
                .map(|n| {
                    let sudo = self.sudo.or(n.ssh.sudo).unwrap_or(false);
                    format!(
                        "ssh {} ({}): {}",
                        n.name,
                        describe_destination(n),
                        RemoteCommand::new(&run, sudo, &env).describe()
                    )
                })
                .collect()),
            Err(e) => {
                // A node captured at run time is not known yet: that is no error to show.
                let on = self.target().unwrap_or_default();
                let why = if scope.uses_pending(&on) {
                    " (the node is captured at run time)".to_string()
                } else {
                    format!(" ({e})")
                };
                Ok(vec![format!(
                    "ssh on {on}: {}{why}",
                    RemoteCommand::new(&run, self.sudo.unwrap_or(false), &env).describe()
                )])
            }
        }
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let (run, env) = self.rendered(ctx.scope)?;
        let (selector, nodes) = self.nodes(ctx.scope)?;
        let limit = self.max_parallel.unwrap_or(nodes.len()).max(1);
        let semaphore = Arc::new(Semaphore::new(limit));
        // Bounded: a node writing faster than the phase log takes lines waits on its channel.
        let (tx, mut rx) = mpsc::channel::<(String, Stream, String)>(256);
        let mut tasks = tokio::task::JoinSet::new();
        for node in nodes.iter().cloned() {
            let sudo = self.sudo.or(node.ssh.sudo).unwrap_or(false);
            let line = RemoteCommand::new(&run, sudo, &env);
            let pool = ctx.ssh.clone();
            let permit = semaphore.clone();
            let tx = tx.clone();
            let timeout = self.timeout_secs;
            tasks.spawn(async move {
                let _permit = permit.acquire_owned().await;
                run_on_node(&pool, &node, &line, timeout, tx).await
            });
        }
        drop(tx);
        let mut results: Vec<NodeResult> = Vec::new();
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some((node, stream, line)) => ctx.emit(stream, &format!("[{node}] {line}")),
                    None => {
                        while let Some(r) = tasks.join_next().await {
                            if let Ok(r) = r { results.push(r); }
                        }
                        break;
                    }
                },
                reason = cancelled(&ctx.cancel) => {
                    tasks.abort_all();
                    return Err(ActionError::Cancelled(reason));
                }
            }
        }
        results.sort_by_key(|r| nodes.iter().position(|n| n.name == r.node));
        let failed: Vec<&NodeResult> = results.iter().filter(|r| !r.ok()).collect();
        let mut per_node = serde_json::Map::new();
        for r in &results {
            per_node.insert(r.node.clone(), r.to_json());
        }
        let mut result = serde_json::json!({
            "on": selector.describe(),
            "nodes": per_node,
            "failed": failed.iter().map(|r| r.node.clone()).collect::<Vec<_>>(),
        });
        if let [only] = results.as_slice() {
            if let (serde_json::Value::Object(top), serde_json::Value::Object(fields)) =
                (&mut result, only.to_json())
            {
                top.extend(fields);
            }
        }
        if failed.is_empty() {
            return Ok(ActionOutput {
                result,
                summary: Some(format!(
                    "{} node{} ok",
                    results.len(),
                    if results.len() == 1 { "" } else { "s" }
                )),
            });
        }
        let details: Vec<String> = failed.iter().map(|r| r.failure()).collect();
        Err(ActionError::NodesFailed {
            failed: failed.len(),
            total: results.len(),
            details: details.join("; "),
        })
    }
}

struct NodeResult {
    node: String,
    exit_code: Option<i32>,
    stdout: Captured,
    stderr: Captured,
    duration_ms: u64,
    /// This machine's clock (Unix ms) just before the command was started on the node's
    /// connection and when it ended: they bracket anything the command read on the node
    /// (`node-health` compares the node's clock within them).
    started_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
    error: Option<String>,
}

impl NodeResult {
    fn ok(&self) -> bool {
        self.error.is_none() && self.exit_code == Some(0)
    }

    fn failure(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let tail = self.stderr.tail();
        match self.exit_code {
            Some(code) => format!(
                "{} exited with code {code}{}",
                self.node,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ),
            None => format!(
                "{} was terminated (signal or lost connection){}",
                self.node,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "exit_code": self.exit_code,
            "stdout": self.stdout.text,
            "stderr": self.stderr.text,
            "duration_ms": self.duration_ms,
            "started_at_ms": self.started_at_ms,
            "finished_at_ms": self.finished_at_ms,
            "json": self.stdout.json(),
            "truncated": self.stdout.truncated || self.stderr.truncated,
            "error": self.error,
        })
    }
}

/// Forwards each line of a remote stream (prefixed later with the node) and keeps its head
/// (see `output`).
async fn collect_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    stream: Stream,
    node: &str,
    tx: &mpsc::Sender<(String, Stream, String)>,
) -> Captured {
    let mut collected = Captured::default();
    if let Some(r) = reader {
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(Some(l)) = read_line(&mut reader, &mut buf).await {
            collected.push_line(&l);
            let _ = tx.send((node.to_string(), stream, l)).await;
        }
    }
    collected
}

/// This machine's clock, in Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run_on_node(
    pool: &SshPool,
    node: &NodeEntry,
    command: &RemoteCommand,
    timeout: Option<f64>,
    tx: mpsc::Sender<(String, Stream, String)>,
) -> NodeResult {
    let started = Instant::now();
    let mut result = NodeResult {
        node: node.name.clone(),
        exit_code: None,
        stdout: Captured::default(),
        stderr: Captured::default(),
        duration_ms: 0,
        started_at_ms: None,
        finished_at_ms: None,
        error: None,
    };
    let session = match pool.session(node).await {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(e.to_string());
            result.duration_ms = started.elapsed().as_millis() as u64;
            return result;
        }
    };
    let work = async {
        let spawn = |session: Arc<openssh::Session>| async move {
            session
                .arc_raw_command(&command.line)
                .stdin(openssh::Stdio::piped())
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::piped())
                .spawn()
                .await
        };
        // A master that exited while idle (or was killed) is replaced once.
        let mut started_at = unix_ms();
        let mut child = match spawn(session.clone()).await {
            Ok(child) => child,
            Err(_) => {
                let fresh = pool.reconnect(node).await.map_err(|e| e.to_string())?;
                started_at = unix_ms();
                spawn(fresh)
                    .await
                    .map_err(|e| format!("{}: start command: {e}", node.name))?
            }
        };
        if let Some(mut stdin) = child.stdin().take() {
            use tokio::io::AsyncWriteExt;
            let script = script_for_stdin(&command.script);
            // Closing stdin (the drop) tells the remote shell the script is complete.
            tokio::spawn(async move {
                let _ = stdin.write_all(script.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let (out, err) = tokio::join!(
            collect_lines(stdout, Stream::Stdout, &node.name, &tx),
            collect_lines(stderr, Stream::Stderr, &node.name, &tx)
        );
        let status = child.wait().await;
        Ok::<_, String>((out, err, status, started_at, unix_ms()))
    };
    let outcome = match timeout {
        Some(secs) => match tokio::time::timeout(Duration::from_secs_f64(secs), work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{} timed out after {}",
                node.name,
                super::wait::human_secs(secs)
            )),
        },
        None => work.await,
    };
    match outcome {
        Ok((out, err, status, started_at, finished_at)) => {
            result.started_at_ms = Some(started_at);
            result.finished_at_ms = Some(finished_at);
            result.stdout = out;
            result.stderr = err;
            match status {
                Ok(s) => result.exit_code = s.code(),
                Err(openssh::Error::RemoteProcessTerminated) => result.exit_code = None,
                Err(e) => result.error = Some(format!("{}: {e}", node.name)),
            }
        }
        Err(e) => result.error = Some(e),
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_command_line_is_fixed_and_holds_no_value() {
        let secret = "s3cr3t'; reboot #";
        let c = RemoteCommand::new("systemctl stop kubelet", false, &env(&[("TOKEN", secret)]));
        let words = shlex::split(&c.line).expect("a valid shell line");
        assert_eq!(words, ["sh", "-c", SCRIPT_ON_STDIN]);
        assert!(!c.line.contains("s3cr3t"), "{}", c.line);
        assert!(!c.line.contains("systemctl"), "{}", c.line);
        // The same line whatever runs: nothing of the command or its env reaches argv.
        assert_eq!(c.line, RemoteCommand::new("true", false, &[]).line);
    }

    #[test]
    fn sudo_ends_its_options_with_a_double_dash() {
        let c = RemoteCommand::new("id -u", true, &[]);
        let words = shlex::split(&c.line).expect("a valid shell line");
        assert_eq!(words, ["sudo", "-n", "--", "sh", "-c", SCRIPT_ON_STDIN]);
        assert_eq!(c.describe(), "sudo -n -- sh, script on stdin: id -u");
    }

    #[test]
    fn the_script_on_stdin_exports_each_value_as_one_quoted_word() {
        let c = RemoteCommand::new(
            "echo \"$TOKEN\"",
            false,
            &env(&[("TOKEN", "a b'c $(x)"), ("MODE", "fast")]),
        );
        let lines: Vec<&str> = c.script.lines().collect();
        assert_eq!(lines.len(), 3, "{}", c.script);
        assert_eq!(lines[2], "echo \"$TOKEN\"");
        for (line, (name, value)) in lines
            .iter()
            .zip([("TOKEN", "a b'c $(x)"), ("MODE", "fast")])
        {
            let words = shlex::split(line).expect("a valid shell line");
            assert_eq!(words, ["export".to_string(), format!("{name}={value}")]);
        }
        assert_eq!(
            c.describe(),
            format!("sh, script on stdin: {}", c.script.replace('\n', "; "))
        );
        // What is written to stdin ends with the marker the remote shell waits for.
        assert!(script_for_stdin(&c.script).ends_with("\n__medic_eof__"));
    }

    #[test]
    fn a_shell_running_the_line_gets_each_value_back_unchanged() {
        use std::io::Write;
        let value = "a b'c \"d\" $(echo no) `echo no` ; exit 3";
        let c = RemoteCommand::new("printf '%s' \"$V\"", false, &env(&[("V", value)]));
        let words = shlex::split(&c.line).expect("a valid shell line");
        let mut child = std::process::Command::new(&words[0])
            .args(&words[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(script_for_stdin(&c.script).as_bytes())
            .expect("script written");
        drop(stdin);
        let out = child.wait_with_output().expect("sh exits");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }
}
