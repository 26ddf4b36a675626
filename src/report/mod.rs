//! `medic report`: the support bundle. One gzip tarball with what support needs after a
//! failed procedure, scoped, redacted and verifiable.
//!
//! 1. `collectors.rs` declares what is collected, as a table (group, source, command or
//!    object, path); `--only GROUP` filters it.
//! 2. [`plan`] scopes it: the nodes (`--node`, or those an `--operation` touched), the time
//!    window (`--since`, or the operation's start − 15 min … end + 5 min), the operations.
//! 3. [`collect`] runs it: `node.rs` over SSH (bounded concurrency, a timeout per command),
//!    `cluster.rs` from the Kubernetes API and etcd, `medic.rs` from the store. Nothing
//!    aborts the run: a failure is a manifest line (exit code, stderr tail, timeout).
//! 4. `bundle.rs` scrubs every file (`redact.rs`), caps it keeping the tail, hashes it and
//!    writes it; `MANIFEST.json` last; [`bundle::verify`] re-checks a bundle.

mod bundle;
mod cluster;
pub(crate) mod collectors;
mod medic;
mod node;
mod redact;
mod scope;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::engine::Redactor;
use crate::inventory::{Inventory, NodeEntry};
use crate::procedure::Catalog;
use crate::ssh::SshPool;
use crate::store::{format_time, now_ms, Actor, Operation};

pub(crate) use bundle::{verify, Manifest};
pub(crate) use collectors::Group;
pub(crate) use scope::{parse_since, plan, Scope};

/// Nodes collected from at once.
const NODES_AT_ONCE: usize = 16;

/// Why a report could not be made (or checked).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("write the bundle {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read the bundle {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bundle {} has no valid manifest: {reason}", .path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("read the state in {}: {source}; pass --state-dir", .dir.display())]
    State {
        dir: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("operation: {0}")]
    Operation(#[from] crate::operation::OperationError),
    #[error("--node {node}: the inventory has no such node")]
    UnknownNode { node: String },
    #[error("nothing could be collected: every collector failed (see the warnings)")]
    NothingCollected,
}

impl ReportError {
    /// 2 for bad input, 1 when collecting or writing failed.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            ReportError::UnknownNode { .. } | ReportError::State { .. } => 2,
            ReportError::Operation(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// The time window, in seconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) since: Option<u64>,
    pub(crate) until: Option<u64>,
}

/// What `medic report` was asked for.
pub(crate) struct ReportOptions {
    pub(crate) output: PathBuf,
    pub(crate) only: Vec<Group>,
    pub(crate) nodes: Vec<String>,
    pub(crate) since: Option<u64>,
    pub(crate) operation: Option<String>,
    pub(crate) max_file_size: u64,
    pub(crate) max_size: u64,
    pub(crate) timeout: Duration,
    pub(crate) state_dir: PathBuf,
    pub(crate) inventory_path: PathBuf,
    pub(crate) inventory: Option<Arc<Inventory>>,
    pub(crate) catalog: Option<Catalog>,
    pub(crate) max_phases: usize,
    pub(crate) actor: Actor,
    /// The command line, redacted by the bundle before it is written.
    pub(crate) command_line: String,
    pub(crate) progress: bool,
}

/// A line of `--dry-run`: what would be collected from where.
#[derive(Debug, Serialize)]
pub(crate) struct Planned {
    pub(crate) group: Group,
    pub(crate) source: &'static str,
    pub(crate) from: String,
    pub(crate) command: String,
    pub(crate) path: String,
}

/// What a finished report says.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) file: PathBuf,
    pub(crate) files: usize,
    pub(crate) bytes: u64,
    pub(crate) failed: usize,
    pub(crate) warnings: Vec<String>,
}

/// Progress bars on a terminal: one per node, one for the rest.
#[derive(Clone)]
pub(crate) struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Progress {
            multi: on.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub(crate) fn node(&self, name: &str, len: usize) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let bar = multi.add(ProgressBar::new(len as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} {bar:20} {pos}/{len} {msg}")
                .expect("progress template"),
        );
        bar.set_prefix(name.to_string());
        bar
    }
}

/// Collects everything `scope` names into the bundle at `opts.output`.
pub(crate) async fn collect(opts: &ReportOptions, scope: &Scope) -> Result<Outcome, ReportError> {
    let started = now_ms();
    let known = Redactor::default();
    for (name, value) in &scope.secrets {
        known.add(name, value);
    }
    let top = format!(
        "medic-report-{}",
        format_time(started)
            .replace([':', '-'], "")
            .trim_end_matches('Z')
    );
    let mut bundle = bundle::Bundle::create(
        &opts.output,
        top,
        redact::Scrubber::new(known),
        opts.max_file_size,
        opts.max_size,
    )?;
    let hold = opts.max_file_size as usize + node::MARGIN;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<bundle::Collected>(8);
    let progress = Progress::new(opts.progress);
    let pool = Arc::new(SshPool::new());
    let producer = produce(
        opts,
        scope,
        pool.clone(),
        tx,
        stop.clone(),
        progress.clone(),
        hold,
    );
    let consumer = async {
        let mut result = Ok(());
        while let Some(c) = rx.recv().await {
            if result.is_ok() {
                result = bundle.add(c);
            }
            if bundle.full() && !stop.swap(true, Ordering::Relaxed) {
                bundle.notes.push(format!(
                    "collection stopped: the total budget --max-size ({} bytes) was spent; later items are listed without files",
                    opts.max_size
                ));
            }
        }
        result
    };
    let ((), written) = tokio::join!(producer, consumer);
    pool.close_all().await;
    if let Err(e) = written {
        bundle.abandon();
        return Err(e);
    }
    let files = bundle.items.iter().filter(|i| i.path.is_some()).count();
    if files == 0 {
        bundle.abandon();
        return Err(ReportError::NothingCollected);
    }
    let manifest = Manifest {
        medic_version: env!("CARGO_PKG_VERSION").to_string(),
        command_line: bundle.scrub(&opts.command_line),
        started_at: format_time(started),
        finished_at: format_time(now_ms()),
        since: scope.window.since.map(|s| format_time(s * 1000)),
        until: scope.window.until.map(|s| format_time(s * 1000)),
        operation: opts.operation.clone(),
        notes: scope.notes.clone(),
        items: Vec::new(),
    };
    let bytes = bundle.written;
    let (file, manifest) = bundle.finish(manifest)?;
    let warnings = warnings(&manifest);
    Ok(Outcome {
        file,
        files,
        bytes,
        failed: manifest.items.iter().filter(|i| i.error.is_some()).count(),
        warnings,
    })
}

/// One line per unreachable node, and the notes.
fn warnings(manifest: &Manifest) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .items
        .iter()
        .filter(|i| i.unreachable)
        .map(|i| {
            format!(
                "node {} unreachable, nothing collected from it: {}",
                i.node.as_deref().unwrap_or("?"),
                i.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    out.extend(manifest.notes.iter().cloned());
    out
}

/// Runs every collector of the scope, sending results to `tx`.
async fn produce(
    opts: &ReportOptions,
    scope: &Scope,
    pool: Arc<SshPool>,
    tx: mpsc::Sender<bundle::Collected>,
    stop: Arc<AtomicBool>,
    progress: Progress,
    hold: usize,
) {
    let window = scope.window;
    let node_commands: Vec<(String, String)> = collectors::selected(&opts.only)
        .filter_map(|c| match c.source {
            collectors::Source::Node(cmd) => Some((
                collectors::node_command(cmd, window.since, window.until),
                c.path.to_string(),
            )),
            _ => None,
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    if !node_commands.is_empty() {
        let job = Arc::new(node::NodeJob {
            pool: pool.clone(),
            commands: node_commands,
            timeout: opts.timeout,
            hold,
            nodes_at_once: Arc::new(Semaphore::new(NODES_AT_ONCE)),
            stop: stop.clone(),
        });
        for n in &scope.nodes {
            tasks.spawn(node::collect_node(
                job.clone(),
                n.clone(),
                tx.clone(),
                progress.clone(),
            ));
        }
    }
    let others: Vec<&collectors::Collector> = collectors::selected(&opts.only)
        .filter(|c| !matches!(c.source, collectors::Source::Node(_)))
        .collect();
    let bar = progress.node("cluster", others.len());
    let kube = if others
        .iter()
        .any(|c| matches!(c.source, collectors::Source::Api(_)))
    {
        let settings = opts
            .inventory
            .as_ref()
            .map(|i| i.kubernetes.clone())
            .unwrap_or_default();
        crate::action::kube::client_for(&settings).await
    } else {
        Err(String::new())
    };
    for c in others {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let items = match c.source {
            collectors::Source::Api(o) => {
                cluster::collect_api(&kube, o, c.path, &window, hold).await
            }
            collectors::Source::Etcd(q) => match &opts.inventory {
                Some(inv) => vec![cluster::collect_etcd(inv, &pool, q, c.path).await],
                None => Vec::new(),
            },
            collectors::Source::Medic(m) => {
                medic::collect(m, c.path, &scope.operations, opts, hold).await
            }
            collectors::Source::Node(_) => Vec::new(),
        };
        for i in items {
            let _ = tx.send(i).await;
        }
        bar.inc(1);
    }
    bar.finish_with_message("done");
    drop(tx);
    while tasks.join_next().await.is_some() {}
}

/// `--dry-run`: each collector of the scope with where it reads from.
pub(crate) fn dry_run(opts: &ReportOptions, scope: &Scope) -> Vec<Planned> {
    let mut out = Vec::new();
    for c in collectors::selected(&opts.only) {
        let line = |from: String, command: String, path: String| Planned {
            group: c.group,
            source: c.source.kind(),
            from,
            command,
            path,
        };
        match c.source {
            collectors::Source::Node(cmd) => {
                let command = collectors::node_command(cmd, scope.window.since, scope.window.until);
                for n in &scope.nodes {
                    out.push(line(
                        format!("ssh {}", crate::ssh::describe_destination(n)),
                        command.clone(),
                        format!("nodes/{}/{}", n.name, c.path),
                    ));
                }
            }
            collectors::Source::Api(o) => out.push(line(
                "kubernetes api".into(),
                format!("{o:?}"),
                c.path.into(),
            )),
            collectors::Source::Etcd(q) => {
                out.push(line("etcd".into(), format!("{q:?}"), c.path.into()))
            }
            collectors::Source::Medic(m) if c.path.contains("{op}") => {
                for op in &scope.operations {
                    out.push(line(
                        format!("state {}", opts.state_dir.display()),
                        format!("{m:?}"),
                        c.path.replace("{op}", &op.id),
                    ));
                }
            }
            collectors::Source::Medic(m) => {
                out.push(line("medic".into(), format!("{m:?}"), c.path.into()))
            }
        }
    }
    out
}

/// The nodes of the inventory named by `wanted` (all when empty).
pub(crate) fn nodes_named(
    inventory: Option<&Inventory>,
    wanted: &[String],
) -> Result<Vec<NodeEntry>, ReportError> {
    let all = inventory.map(|i| i.nodes.clone()).unwrap_or_default();
    for w in wanted {
        if !all.iter().any(|n| &n.name == w) {
            return Err(ReportError::UnknownNode { node: w.clone() });
        }
    }
    Ok(all
        .into_iter()
        .filter(|n| wanted.is_empty() || wanted.contains(&n.name))
        .collect())
}

/// The operations a window includes: those active, or created or finished inside it.
pub(crate) fn operations_in(ops: Vec<Operation>, window: &Window) -> Vec<Operation> {
    ops.into_iter()
        .filter(|o| {
            let start = o.created_at / 1000;
            let end = o.finished_at.map_or(u64::MAX, |f| f / 1000);
            window.since.is_none_or(|s| end >= s) && window.until.is_none_or(|u| start <= u)
        })
        .collect()
}
