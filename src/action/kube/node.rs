//! Node operations: cordon, uncordon, delete, read (`node_info`, `nodes`), labels, taints, and
//! the two waits (`wait_ready`, `wait_gone`) built on [`super::wait`].
//!
//! Each takes the rendered node name and the node API, and returns the action's output (a JSON
//! result for `capture:` and a one-line summary).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::super::wait::human_secs;
use super::super::{ActionCtx, ActionError, ActionOutput};
use super::client::{is_not_found, KubeError};
use super::wait::{await_condition, is_gone, is_ready, is_ready_with, kubelet_version, Polled};
use super::{fail, render_duration};

fn done(summary: String, result: serde_json::Value) -> Result<ActionOutput, ActionError> {
    Ok(ActionOutput {
        result,
        summary: Some(summary),
    })
}

/// Marks `node` unschedulable (the first step of a cordon and of a drain).
pub(crate) async fn mark_unschedulable(nodes: &Api<K8sNode>, node: &str) -> Result<(), KubeError> {
    nodes
        .cordon(node)
        .await
        .map(drop)
        .map_err(|source| KubeError::Cordon {
            node: node.to_string(),
            source,
        })
}

pub(crate) async fn cordon(nodes: &Api<K8sNode>, node: &str) -> Result<ActionOutput, ActionError> {
    mark_unschedulable(nodes, node).await?;
    done(
        format!("{node} cordoned"),
        json!({"node": node, "unschedulable": true}),
    )
}

pub(crate) async fn uncordon(
    nodes: &Api<K8sNode>,
    node: &str,
) -> Result<ActionOutput, ActionError> {
    nodes
        .uncordon(node)
        .await
        .map_err(|source| KubeError::Uncordon {
            node: node.to_string(),
            source,
        })?;
    done(
        format!("{node} uncordoned"),
        json!({"node": node, "unschedulable": false}),
    )
}

/// Deletes the node object; a node already gone succeeds and says so.
pub(crate) async fn delete(nodes: &Api<K8sNode>, node: &str) -> Result<ActionOutput, ActionError> {
    match nodes.delete(node, &DeleteParams::default()).await {
        Ok(_) => done(
            format!("node {node} deleted"),
            json!({"node": node, "deleted": true}),
        ),
        Err(e) if is_not_found(&e) => done(
            format!("node {node} is already gone"),
            json!({"node": node, "deleted": false}),
        ),
        Err(source) => Err(KubeError::DeleteNode {
            node: node.to_string(),
            source,
        }
        .into()),
    }
}

/// Every node's status.
pub(crate) async fn list(nodes: &Api<K8sNode>) -> Result<ActionOutput, ActionError> {
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|source| KubeError::ListNodes { source })?;
    let infos: Vec<serde_json::Value> = list.items.iter().map(node_info).collect();
    let ready = infos.iter().filter(|i| i["ready"] == true).count();
    done(
        format!("{} node(s), {ready} Ready", infos.len()),
        json!({"nodes": infos, "total": infos.len(), "ready": ready}),
    )
}

async fn get(nodes: &Api<K8sNode>, node: &str) -> Result<K8sNode, KubeError> {
    nodes.get(node).await.map_err(|source| KubeError::GetNode {
        node: node.to_string(),
        source,
    })
}

async fn get_opt(nodes: &Api<K8sNode>, node: &str) -> Result<Option<K8sNode>, ActionError> {
    nodes.get_opt(node).await.map_err(|source| {
        KubeError::GetNode {
            node: node.to_string(),
            source,
        }
        .into()
    })
}

/// One node's status.
pub(crate) async fn info(nodes: &Api<K8sNode>, node: &str) -> Result<ActionOutput, ActionError> {
    let n = get(nodes, node).await?;
    let info = node_info(&n);
    let state = if info["ready"] == true {
        "Ready"
    } else {
        "NotReady"
    };
    done(format!("{node}: {state}"), info)
}

/// Waits until the node is Ready (with the kubelet `version`, when given).
pub(crate) async fn wait_ready(
    ctx: &ActionCtx<'_>,
    nodes: &Api<K8sNode>,
    node: &str,
    timeout: &str,
    version: Option<&str>,
) -> Result<ActionOutput, ActionError> {
    let timeout_secs = render_duration(ctx.scope, timeout)?;
    let version = match version {
        Some(v) => Some(ctx.scope.render("kube.version", v, false)?),
        None => None,
    };
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
    let poll = || get_opt(nodes, node);
    let condition = is_ready_with(version.as_deref());
    let interval = Duration::from_millis(250);
    match await_condition(&ctx.cancel, deadline, interval, poll, condition).await? {
        Polled::Met(state) => {
            let n = state.expect("a Ready node exists");
            let seen = kubelet_version(&n).map(str::to_string);
            let mut info = node_info(&n);
            info["version"] = json!(seen);
            done(
                match &seen {
                    Some(v) => format!("{node} is Ready (kubelet {v})"),
                    None => format!("{node} is Ready"),
                },
                info,
            )
        }
        Polled::TimedOut(state) => {
            let wanted = match &version {
                Some(v) => format!("Ready with kubelet {v}"),
                None => "Ready".to_string(),
            };
            let last = match &state {
                None => "the node does not exist".to_string(),
                Some(n) => format!(
                    "it was {} with kubelet {}",
                    if is_ready(n) { "Ready" } else { "NotReady" },
                    kubelet_version(n).unwrap_or("(no version reported)")
                ),
            };
            Err(fail(format!(
                "node {node} was not {wanted} after {}; last seen: {last}",
                human_secs(timeout_secs)
            )))
        }
    }
}

/// Waits until the node object is gone.
pub(crate) async fn wait_gone(
    ctx: &ActionCtx<'_>,
    nodes: &Api<K8sNode>,
    node: &str,
    timeout: &str,
) -> Result<ActionOutput, ActionError> {
    let timeout_secs = render_duration(ctx.scope, timeout)?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
    let poll = || get_opt(nodes, node);
    let interval = Duration::from_millis(250);
    match await_condition(&ctx.cancel, deadline, interval, poll, is_gone).await? {
        Polled::Met(_) => done(
            format!("{node} is gone"),
            json!({"node": node, "gone": true}),
        ),
        Polled::TimedOut(_) => Err(fail(format!(
            "node {node} was not gone after {}",
            human_secs(timeout_secs)
        ))),
    }
}

pub(crate) async fn label(
    ctx: &ActionCtx<'_>,
    nodes: &Api<K8sNode>,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> Result<ActionOutput, ActionError> {
    let mut rendered = serde_json::Map::new();
    for (k, v) in labels {
        rendered.insert(k.clone(), json!(ctx.scope.render("kube.label", v, false)?));
    }
    let patch = json!({"metadata": {"labels": rendered}});
    patch_node(nodes, node, "label", patch).await?;
    done(
        format!("{node} labelled"),
        json!({"node": node, "labels": rendered}),
    )
}

pub(crate) async fn unlabel(
    nodes: &Api<K8sNode>,
    node: &str,
    keys: &[String],
) -> Result<ActionOutput, ActionError> {
    let removed: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    let patch = json!({"metadata": {"labels": removed}});
    patch_node(nodes, node, "unlabel", patch).await?;
    done(
        format!("{node} unlabelled"),
        json!({"node": node, "removed": keys}),
    )
}

/// Sets the taint `key` (replacing one with the same key).
pub(crate) async fn taint(
    nodes: &Api<K8sNode>,
    node: &str,
    key: &str,
    value: &str,
    effect: &str,
) -> Result<ActionOutput, ActionError> {
    let mut taints = taints_without(nodes, node, key).await?;
    taints.push(json!({"key": key, "value": value, "effect": effect}));
    patch_node(nodes, node, "taint", json!({"spec": {"taints": taints}})).await?;
    done(
        format!("{node} tainted {key}={value}:{effect}"),
        json!({"node": node, "taints": taints}),
    )
}

pub(crate) async fn untaint(
    nodes: &Api<K8sNode>,
    node: &str,
    key: &str,
) -> Result<ActionOutput, ActionError> {
    let taints = taints_without(nodes, node, key).await?;
    patch_node(nodes, node, "untaint", json!({"spec": {"taints": taints}})).await?;
    done(
        format!("{node} untainted {key}"),
        json!({"node": node, "taints": taints}),
    )
}

/// Applies a merge patch to a node.
async fn patch_node(
    nodes: &Api<K8sNode>,
    node: &str,
    what: &'static str,
    patch: serde_json::Value,
) -> Result<(), KubeError> {
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|source| KubeError::PatchNode {
            what,
            node: node.to_string(),
            source,
        })
}

/// The node's taints, without the one with `key`.
async fn taints_without(
    nodes: &Api<K8sNode>,
    node: &str,
    key: &str,
) -> Result<Vec<serde_json::Value>, KubeError> {
    let n = get(nodes, node).await?;
    Ok(n.spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != key)
        .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
        .collect())
}

/// Ready condition, roles, addresses and kubelet version of a node (usable by `capture`).
fn node_info(n: &K8sNode) -> serde_json::Value {
    let status = n.status.clone().unwrap_or_default();
    let roles: Vec<String> = n
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .keys()
        .filter_map(|k| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(|s| s.to_string())
        })
        .collect();
    json!({
        "name": n.metadata.name,
        "ready": is_ready(n),
        "roles": roles,
        "unschedulable": n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        "addresses": status.addresses.unwrap_or_default().into_iter().map(|a| json!({"type": a.type_, "address": a.address})).collect::<Vec<_>>(),
        "kubelet_version": status.node_info.map(|i| i.kubelet_version),
        "labels": n.metadata.labels,
        // The conditions that hold (Ready, MemoryPressure, DiskPressure, PIDPressure, ...).
        "conditions": status.conditions.unwrap_or_default().into_iter().filter(|c| c.status == "True").map(|c| c.type_).collect::<Vec<_>>(),
    })
}
