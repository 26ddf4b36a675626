//! What a leaf phase does. One module per action kind, each with the same small interface
//! ([`Action`]): parse from the procedure, list its templates, describe itself for a dry-run,
//! execute. Adding a kind is one module plus one line in the `actions!` list below.
//!
//! 1. `parse` reads the action's YAML, reporting problems with positions.
//! 2. At execution the engine hands `execute` an [`ActionCtx`]: a render scope (parameters,
//!    captured variables, loop item), an output sink and a cancellation signal.
//! 3. `execute` returns a structured result (JSON) that `capture:` expressions read.

pub mod check;
pub mod etcd;
mod etcd_maint;
pub mod kube;
pub(crate) mod output;
pub mod pause;
pub mod run;
pub mod ssh;
pub mod ssh_host_key;
pub mod wait;

use std::future::Future;

use marked_yaml::Node;
use minijinja::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::inventory::Inventory;
use crate::source::Reader;
use crate::ssh::SshPool;
use crate::template::{TemplateContext, TemplateError, Templates};

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines medic itself writes about the phase (attempts, waits).
    Medic,
}

/// Templates rendered against one phase's variables, and the inventory to resolve nodes.
pub(crate) struct RenderScope<'a> {
    pub templates: &'a Templates,
    pub ctx: TemplateContext,
    pub inventory: Option<&'a Inventory>,
}

impl RenderScope<'_> {
    pub fn render(
        &self,
        field: &'static str,
        source: &str,
        shell: bool,
    ) -> Result<String, ActionError> {
        self.templates
            .render(source, shell, &self.ctx)
            .map_err(|source| ActionError::Render { field, source })
    }

    /// Whether `source` uses a captured value that is not known yet (dry-runs show such
    /// templates as written rather than computing with a placeholder).
    pub fn uses_pending(&self, source: &str) -> bool {
        let names = self
            .templates
            .template_names(source, false)
            .unwrap_or_default();
        names.iter().any(|n| self.ctx.pending().contains(n))
    }

    pub fn eval(&self, field: &'static str, expr: &str) -> Result<Value, ActionError> {
        self.templates
            .eval(expr, &self.ctx)
            .map_err(|source| ActionError::Render { field, source })
    }
}

/// Why an action was asked to stop.
pub(crate) type Cancel = watch::Receiver<Option<String>>;

/// Resolves once cancellation is requested, with its reason.
pub(crate) async fn cancelled(cancel: &Cancel) -> String {
    let mut rx = cancel.clone();
    loop {
        if let Some(reason) = rx.borrow().clone() {
            return reason;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Waits `pause` between polls, or returns `Cancelled` as soon as cancellation is requested.
pub(crate) async fn sleep_unless_cancelled(
    cancel: &Cancel,
    pause: std::time::Duration,
) -> Result<(), ActionError> {
    tokio::select! {
        _ = tokio::time::sleep(pause) => Ok(()),
        reason = cancelled(cancel) => Err(ActionError::Cancelled(reason)),
    }
}

/// Everything an action may use while it runs.
pub(crate) struct ActionCtx<'a> {
    pub scope: &'a RenderScope<'a>,
    pub output: &'a (dyn Fn(Stream, &str) + Send + Sync),
    pub cancel: Cancel,
    /// SSH master connections shared by every phase of this process.
    pub ssh: std::sync::Arc<SshPool>,
    /// The operator passed `--force`: guards report what they override instead of refusing.
    pub force: bool,
    /// Records a guard that `--force` overrode, in history, before the action goes on.
    pub record_forced: &'a (dyn Fn(&str) + Send + Sync),
}

impl ActionCtx<'_> {
    pub(crate) fn emit(&self, stream: Stream, line: &str) {
        (self.output)(stream, line)
    }

    /// A guard would refuse: with `--force`, records the override and returns Ok; else the
    /// refusal.
    pub(crate) fn guard(&self, refusal: Option<String>) -> Result<(), ActionError> {
        match refusal {
            None => Ok(()),
            Some(message) if self.force => {
                self.emit(Stream::Medic, &format!("--force overrides: {message}"));
                (self.record_forced)(&message);
                Ok(())
            }
            Some(message) => Err(ActionError::Refused { message }),
        }
    }
}

/// What a successful action produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActionOutput {
    /// Structured result, read by `capture:` expressions and shown by `-o json`.
    pub result: serde_json::Value,
    /// One line for the operator, when there is something worth saying.
    pub summary: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ActionError {
    #[error("render `{field}`: {source}")]
    Render {
        field: &'static str,
        source: TemplateError,
    },
    /// The command is not named: it may hold a secret in a form the redactor cannot find.
    #[error("start the command through `sh`: {source}")]
    Spawn { source: std::io::Error },
    #[error("command exited with code {code}{}", tail_suffix(.stderr_tail))]
    CommandFailed { code: i32, stderr_tail: String },
    #[error("command was killed by signal {signal}")]
    CommandKilled { signal: i32 },
    #[error("{message}")]
    CheckFailed { message: String },
    #[error("{message}")]
    Failed { message: String },
    #[error("{failed} of {total} nodes failed: {details}")]
    NodesFailed {
        failed: usize,
        total: usize,
        details: String,
    },
    /// A safety guard refused the action (exit 3 unless `--force`).
    #[error("refused: {message}")]
    Refused { message: String },
    #[error("condition not met after {waited_secs:.0}s ({attempts} attempts){}", tail_suffix(.last))]
    WaitTimedOut {
        waited_secs: f64,
        attempts: u32,
        last: String,
    },
    #[error("{0}")]
    Cancelled(String),
    /// The phase's `timeout:` ran out.
    #[error("timed out after {after}")]
    TimedOut { after: String },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", tail.trim())
    }
}

impl ActionError {
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self, ActionError::Cancelled(_))
    }

    /// The message without any of the command's output (a phase capturing a secret that
    /// failed: which part of its output is secret is not known).
    pub(crate) fn without_output(&self) -> String {
        match self {
            ActionError::CommandFailed { code, .. } => format!("command exited with code {code}"),
            ActionError::NodesFailed { failed, total, .. } => {
                format!("{failed} of {total} nodes failed")
            }
            ActionError::WaitTimedOut {
                waited_secs,
                attempts,
                ..
            } => format!("condition not met after {waited_secs:.0}s ({attempts} attempts)"),
            ActionError::CheckFailed { .. } | ActionError::Failed { .. } => {
                "the action failed".to_string()
            }
            other => other.to_string(),
        }
    }

    /// The kind recorded with the failed phase.
    pub(crate) fn kind(&self) -> crate::plan::FailureKind {
        use crate::plan::FailureKind;
        match self {
            ActionError::Render { .. } => FailureKind::Render,
            ActionError::Spawn { .. }
            | ActionError::CommandFailed { .. }
            | ActionError::CommandKilled { .. } => FailureKind::Command,
            ActionError::CheckFailed { .. } => FailureKind::Check,
            ActionError::Failed { .. } => FailureKind::Other,
            ActionError::NodesFailed { failed, total, .. } => FailureKind::NodesFailed {
                failed: *failed,
                total: *total,
            },
            ActionError::Refused { .. } => FailureKind::Refused,
            ActionError::WaitTimedOut { .. } | ActionError::TimedOut { .. } => {
                FailureKind::TimedOut
            }
            ActionError::Cancelled(_) => FailureKind::Cancelled,
        }
    }
}

/// What an action changes that another operation must not change at the same time (two
/// active operations that touch the same thing collide).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Touch {
    /// A cluster node, by its inventory (or Kubernetes) name.
    Node(String),
    /// The etcd cluster's membership (members added, removed or promoted).
    EtcdMembership,
}

/// The interface every action kind implements.
pub(crate) trait Action: Sized {
    /// The key that selects this action in a procedure (`run:`, `check:`, ...).
    const KIND: &'static str;
    /// Whether running it twice is harmless (the default for `idempotent:`).
    const IDEMPOTENT: bool;
    /// Whether it acts on cluster nodes named in the inventory (so a plan using it needs one).
    const NEEDS_INVENTORY: bool = false;
    /// Whether it completes in-process in well under a millisecond (no process, no network);
    /// the engine keeps the state database open across such phases.
    const INLINE: bool;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self>;
    /// Where it acts, for the plan table (`local`, a node, the cluster); `None` for nowhere.
    fn target(&self) -> Option<String> {
        None
    }
    /// The nodes and shared state it changes, rendered in `scope`; values not known yet
    /// (captured later) are left out.
    fn touches(&self, _scope: &RenderScope<'_>) -> Vec<Touch> {
        Vec::new()
    }
    /// Checks, before anything runs, that the nodes or objects it names exist (e.g. nodes in
    /// the inventory). Values not known yet (captured later) are not checked.
    fn check_targets(&self, _scope: &RenderScope<'_>) -> Result<(), ActionError> {
        Ok(())
    }
    /// The dry-run view: the fully rendered action, one line per step. Pure: no network, no
    /// process (the plan table shows it too).
    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError>;
    /// Whether [`Action::preview`] asks the outside world anything.
    const PREVIEWS: bool = false;
    /// What a dry-run shows after `describe`'s lines, asked of the live cluster (a drain lists
    /// the pods it would move). Only dry-runs call it.
    fn preview(&self, _scope: &RenderScope<'_>) -> impl Future<Output = Vec<String>> + Send {
        std::future::ready(Vec::new())
    }
    fn execute(
        &self,
        ctx: &ActionCtx<'_>,
    ) -> impl Future<Output = Result<ActionOutput, ActionError>> + Send;
}

macro_rules! actions {
    ($($variant:ident($module:ident::$spec:ident)),* $(,)?) => {
        /// An action as written in the plan (templates, not yet rendered).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ActionSpec {
            $($variant($module::$spec)),*
        }

        /// The keys that select an action kind.
        pub(crate) const ACTION_KINDS: &[&str] = &[$(<$module::$spec as Action>::KIND),*];

        impl ActionSpec {
            /// Parses the action selected by `kind`; `None` when the kind is unknown.
            pub(crate) fn parse(kind: &str, node: &Node, reader: &mut Reader) -> Option<Option<ActionSpec>> {
                $(if kind == <$module::$spec as Action>::KIND {
                    return Some($module::$spec::parse(node, reader).map(ActionSpec::$variant));
                })*
                None
            }

            pub(crate) fn kind(&self) -> &'static str {
                match self { $(ActionSpec::$variant(_) => <$module::$spec as Action>::KIND),* }
            }

            pub(crate) fn default_idempotent(&self) -> bool {
                match self { $(ActionSpec::$variant(_) => <$module::$spec as Action>::IDEMPOTENT),* }
            }

            pub(crate) fn needs_inventory(&self) -> bool {
                match self { $(ActionSpec::$variant(_) => <$module::$spec as Action>::NEEDS_INVENTORY),* }
            }

            pub(crate) fn inline(&self) -> bool {
                match self { $(ActionSpec::$variant(_) => <$module::$spec as Action>::INLINE),* }
            }

            pub(crate) fn check_targets(&self, scope: &RenderScope<'_>) -> Result<(), ActionError> {
                match self { $(ActionSpec::$variant(a) => a.check_targets(scope)),* }
            }

            pub(crate) fn target(&self) -> Option<String> {
                match self { $(ActionSpec::$variant(a) => a.target()),* }
            }

            pub(crate) fn touches(&self, scope: &RenderScope<'_>) -> Vec<Touch> {
                match self { $(ActionSpec::$variant(a) => a.touches(scope)),* }
            }

            pub(crate) fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
                match self { $(ActionSpec::$variant(a) => a.describe(scope)),* }
            }

            pub(crate) async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
                match self { $(ActionSpec::$variant(a) => a.execute(ctx).await),* }
            }

            pub(crate) async fn preview(&self, scope: &RenderScope<'_>) -> Vec<String> {
                match self { $(ActionSpec::$variant(a) => a.preview(scope).await),* }
            }

            fn previews(&self) -> bool {
                match self { $(ActionSpec::$variant(_) => <$module::$spec as Action>::PREVIEWS),* }
            }
        }
    };
}

impl ActionSpec {
    /// [`ActionSpec::preview`] for synchronous code running on a (multi-threaded) runtime
    /// thread: the engine's dry run is synchronous. Returns at once, without touching the
    /// runtime, for kinds that preview nothing.
    pub(crate) fn preview_blocking(&self, scope: &RenderScope<'_>) -> Vec<String> {
        if !self.previews() {
            return Vec::new();
        }
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.preview(scope))
        })
    }
}

impl crate::plan::Leaf for ActionSpec {
    fn is_pause(&self) -> bool {
        matches!(self, ActionSpec::Pause(_))
    }
}

/// The plan of an operation: a plan whose leaves carry actions.
pub(crate) type Plan = crate::plan::Plan<ActionSpec>;
/// One node of an operation's plan.
pub(crate) type PlanNode = crate::plan::PlanNode<ActionSpec>;

actions! {
    Run(run::RunSpec),
    Ssh(ssh::SshSpec),
    Etcd(etcd::EtcdSpec),
    Kube(kube::KubeSpec),
    Check(check::CheckSpec),
    Pause(pause::PauseSpec),
    Wait(wait::WaitSpec),
    SshHostKey(ssh_host_key::SshHostKeySpec),
}
