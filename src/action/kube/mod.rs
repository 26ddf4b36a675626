//! `kube`: node lifecycle through the `kube` crate, with `kubectl drain` semantics.
//!
//! ```yaml
//! kube: {cordon: NODE}  |  {uncordon: NODE}  |  {delete_node: NODE}  |  {node_info: NODE}
//! kube: {nodes: {}}   # every node's status, for checks
//! kube: {pods: {namespace: kube-system}}   # one namespace's pods, read-only, for probes
//! kube: {drain: {node: NODE, timeout: 10m, delete_emptydir_data: true, ignore_daemonsets: true,
//!                force: false, grace_period: 30, disable_eviction: false}}
//! kube: {wait_ready: {node: NODE, timeout: 10m, version: v1.31.2}}  |  {wait_gone: {node: NODE, timeout: 5m}}
//! kube: {label: {node: NODE, labels: {k: v}}}  |  {unlabel: {node: NODE, keys: [k]}}
//! kube: {taint: {node: NODE, key: k, value: v, effect: NoSchedule}}  |  {untaint: {node: NODE, key: k}}
//! ```
//!
//! This module is the action kind (its spec, `describe`, `execute`); the work is in:
//!
//! | file | owns |
//! |------|------|
//! | `parse.rs` | reading the operation from a procedure |
//! | `client.rs` | the client, and `KubeError`: one variant per failed API step |
//! | `drain.rs` | the drain: pod classification (pure), eviction rounds, the dry-run preview |
//! | `node.rs` | cordon, uncordon, delete, read, labels, taints, the two waits |
//! | `pods.rs` | one namespace's pods as flat records (`pods`) |
//! | `wait.rs` | wait conditions as pure predicates, and the one polling loop |
//!
//! `describe` is pure (no network); the dry-run asks the live cluster through `preview`.

mod client;
mod drain;
mod facts;
mod node;
mod parse;
mod pods;
mod wait;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::api::Api;
use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::{Action, ActionCtx, ActionError, ActionOutput, RenderScope};
use crate::source::Reader;

pub(crate) use client::client_for;
pub(crate) use facts::{drains, kube_facts};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainSpec {
    pub node: String,
    /// A duration, or a template that renders to one (`"{{ drain_timeout }}"`).
    pub timeout: String,
    /// `true`/`false`, or a template that renders to one.
    pub delete_emptydir_data: String,
    pub ignore_daemonsets: bool,
    pub force: bool,
    pub grace_period: Option<i64>,
    pub disable_eviction: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubeSpec {
    Cordon(String),
    Uncordon(String),
    DeleteNode(String),
    NodeInfo(String),
    /// Every node's status (for checks before a change that touches them all).
    Nodes,
    Drain(DrainSpec),
    WaitReady {
        node: String,
        timeout: String,
        /// The kubelet version the node must report too (`v1.31.2`), a template.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    WaitGone {
        node: String,
        timeout: String,
    },
    Label {
        node: String,
        labels: BTreeMap<String, String>,
    },
    Unlabel {
        node: String,
        keys: Vec<String>,
    },
    Taint {
        node: String,
        key: String,
        value: String,
        effect: String,
    },
    Untaint {
        node: String,
        key: String,
    },
    /// One namespace's pods (a template), read-only.
    Pods {
        namespace: String,
    },
}

const OPS: &[&str] = &[
    "cordon",
    "uncordon",
    "delete_node",
    "node_info",
    "nodes",
    "drain",
    "wait_ready",
    "wait_gone",
    "label",
    "unlabel",
    "taint",
    "untaint",
    "pods",
];

fn fail(message: impl Into<String>) -> ActionError {
    ActionError::Failed {
        message: message.into(),
    }
}

impl KubeSpec {
    fn node_template(&self) -> &str {
        match self {
            KubeSpec::Cordon(n)
            | KubeSpec::Uncordon(n)
            | KubeSpec::DeleteNode(n)
            | KubeSpec::NodeInfo(n) => n,
            KubeSpec::Nodes | KubeSpec::Pods { .. } => "",
            KubeSpec::Drain(d) => &d.node,
            KubeSpec::WaitReady { node, .. }
            | KubeSpec::WaitGone { node, .. }
            | KubeSpec::Label { node, .. }
            | KubeSpec::Unlabel { node, .. }
            | KubeSpec::Taint { node, .. }
            | KubeSpec::Untaint { node, .. } => node,
        }
    }

    fn op(&self) -> &'static str {
        match self {
            KubeSpec::Cordon(_) => "cordon",
            KubeSpec::Uncordon(_) => "uncordon",
            KubeSpec::DeleteNode(_) => "delete_node",
            KubeSpec::NodeInfo(_) => "node_info",
            KubeSpec::Nodes => "nodes",
            KubeSpec::Drain(_) => "drain",
            KubeSpec::WaitReady { .. } => "wait_ready",
            KubeSpec::WaitGone { .. } => "wait_gone",
            KubeSpec::Label { .. } => "label",
            KubeSpec::Unlabel { .. } => "unlabel",
            KubeSpec::Taint { .. } => "taint",
            KubeSpec::Untaint { .. } => "untaint",
            KubeSpec::Pods { .. } => "pods",
        }
    }
}

fn render_duration(scope: &RenderScope<'_>, text: &str) -> Result<f64, ActionError> {
    let rendered = scope.render("kube.timeout", text, false)?;
    crate::source::parse_duration(&rendered)
        .filter(|d| *d > 0.0 && *d <= crate::source::MAX_DURATION_SECS)
        .ok_or_else(|| {
            fail(format!(
                "timeout `{rendered}` is not a duration longer than zero such as 30s, 10m or 1h"
            ))
        })
}

fn render_bool(scope: &RenderScope<'_>, text: &str) -> Result<bool, ActionError> {
    match scope.render("kube flag", text, false)?.trim() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" | "" => Ok(false),
        other => Err(fail(format!("`{other}` is not true or false"))),
    }
}

impl Action for KubeSpec {
    const KIND: &'static str = "kube";
    const IDEMPOTENT: bool = true;
    const INLINE: bool = false;
    const PREVIEWS: bool = true;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        parse::parse(node, reader)
    }

    fn touches(&self, scope: &RenderScope<'_>) -> Vec<super::Touch> {
        let template = self.node_template();
        if template.is_empty() || scope.uses_pending(template) {
            return Vec::new();
        }
        match scope.render("kube.node", template, false) {
            Ok(node) => vec![super::Touch::Node(node)],
            Err(_) => Vec::new(),
        }
    }

    fn target(&self) -> Option<String> {
        if matches!(self, KubeSpec::Nodes) {
            return Some("every node".into());
        }
        if let KubeSpec::Pods { namespace } = self {
            return Some(format!("pods in {namespace}"));
        }
        Some(format!("node {}", self.node_template()))
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        let node = scope.render("kube.node", self.node_template(), false)?;
        let drain = match self {
            KubeSpec::Drain(d) => Some(d.resolve(scope)?),
            _ => None,
        };
        let line = match self {
            KubeSpec::Drain(_) => {
                let d = drain.as_ref().expect("resolved above");
                format!(
                "kube drain {node}: cordon, evict its pods (policy/v1, budgets respected, up to {}){}{}{}",
                super::wait::human_secs(d.timeout_secs),
                if d.ignore_daemonsets { ", DaemonSet pods left alone" } else { "" },
                if d.delete_emptydir_data { ", emptyDir data deleted" } else { "" },
                if d.force { ", unmanaged pods deleted" } else { "" }
            )
            }
            KubeSpec::WaitReady {
                timeout, version, ..
            } => format!(
                "kube wait until {node} is Ready{} (up to {})",
                match version {
                    Some(v) => format!(" with kubelet {}", scope.render("kube.version", v, false)?),
                    None => String::new(),
                },
                super::wait::human_secs(render_duration(scope, timeout)?)
            ),
            KubeSpec::WaitGone { timeout, .. } => format!(
                "kube wait until node {node} is gone (up to {})",
                super::wait::human_secs(render_duration(scope, timeout)?)
            ),
            KubeSpec::Label { labels, .. } => format!(
                "kube label {node} {}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            KubeSpec::Unlabel { keys, .. } => format!("kube unlabel {node} {}", keys.join(" ")),
            KubeSpec::Taint {
                key, value, effect, ..
            } => format!("kube taint {node} {key}={value}:{effect}"),
            KubeSpec::Untaint { key, .. } => format!("kube untaint {node} {key}"),
            KubeSpec::Nodes => {
                "kube read every node's status (Ready, kubelet version, cordoned)".into()
            }
            KubeSpec::Pods { namespace } => format!(
                "kube read the pods of namespace {}",
                scope.render("kube.pods.namespace", namespace, false)?
            ),
            other => format!("kube {} {node}", other.op()),
        };
        Ok(vec![line])
    }

    /// For a drain, which pods would move
    /// and which would block, asked of the cluster; nothing for the other operations, or when
    /// the action cannot be rendered yet (`describe` says so).
    async fn preview(&self, scope: &RenderScope<'_>) -> Vec<String> {
        let KubeSpec::Drain(d) = self else {
            return Vec::new();
        };
        let (Ok(node), Ok(d)) = (scope.render("kube.node", &d.node, false), d.resolve(scope))
        else {
            return Vec::new();
        };
        drain::preview(scope, &node, &d).await
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let node = ctx.scope.render("kube.node", self.node_template(), false)?;
        let client = client::client(ctx.scope).await?;
        let nodes: Api<K8sNode> = Api::all(client.clone());
        match self {
            KubeSpec::Cordon(_) => node::cordon(&nodes, &node).await,
            KubeSpec::Uncordon(_) => node::uncordon(&nodes, &node).await,
            KubeSpec::DeleteNode(_) => node::delete(&nodes, &node).await,
            KubeSpec::Nodes => {
                // The API server's own version too, for the version-skew probe.
                let mut out = node::list(&nodes).await?;
                if let Ok(v) = client.apiserver_version().await {
                    out.result["server_version"] = serde_json::json!(v.git_version);
                }
                Ok(out)
            }
            KubeSpec::NodeInfo(_) => node::info(&nodes, &node).await,
            KubeSpec::Drain(d) => {
                let d = d.resolve(ctx.scope)?;
                drain::drain(ctx, &client, &node, &d).await
            }
            KubeSpec::WaitReady {
                timeout, version, ..
            } => node::wait_ready(ctx, &nodes, &node, timeout, version.as_deref()).await,
            KubeSpec::WaitGone { timeout, .. } => {
                node::wait_gone(ctx, &nodes, &node, timeout).await
            }
            KubeSpec::Label { labels, .. } => node::label(ctx, &nodes, &node, labels).await,
            KubeSpec::Unlabel { keys, .. } => node::unlabel(&nodes, &node, keys).await,
            KubeSpec::Taint {
                key, value, effect, ..
            } => node::taint(&nodes, &node, key, value, effect).await,
            KubeSpec::Untaint { key, .. } => node::untaint(&nodes, &node, key).await,
            KubeSpec::Pods { namespace } => {
                let ns = ctx.scope.render("kube.pods.namespace", namespace, false)?;
                pods::list(&client, &ns).await
            }
        }
    }
}
