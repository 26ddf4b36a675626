//! `kube`: node lifecycle through the `kube` crate, with `kubectl drain` semantics.
//!
//! ```yaml
//! kube: {cordon: NODE}  |  {uncordon: NODE}  |  {delete_node: NODE}  |  {node_info: NODE}
//! kube: {nodes: {}}   # every node's status, for checks
//! kube: {drain: {node: NODE, timeout: 10m, delete_emptydir_data: true, ignore_daemonsets: true,
//!                force: false, grace_period: 30, disable_eviction: false}}
//! kube: {wait_ready: {node: NODE, timeout: 10m, version: v1.31.2}}  |  {wait_gone: {node: NODE, timeout: 5m}}
//! kube: {label: {node: NODE, labels: {k: v}}}  |  {unlabel: {node: NODE, keys: [k]}}
//! kube: {taint: {node: NODE, key: k, value: v, effect: NoSchedule}}  |  {untaint: {node: NODE, key: k}}
//! ```
//!
//! Drain: cordon; list the node's pods by field selector; skip mirror pods and (by default)
//! DaemonSet pods; refuse unmanaged pods unless `force` and emptyDir pods unless
//! `delete_emptydir_data`; evict everything at once through policy/v1, retrying 429s from
//! disruption budgets with backoff until the timeout (the client's own 429 retry is off); wait
//! until each evicted pod is gone by uid. A drained node drains again at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::Client;
use marked_yaml::Node;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    sleep_unless_cancelled, Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream,
};
use crate::source::{start_span, Fields, Reader, TemplateKind};

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
];

fn fail(message: impl Into<String>) -> ActionError {
    ActionError::Failed {
        message: message.into(),
    }
}

fn api_error(what: &str, e: kube::Error) -> ActionError {
    match e {
        kube::Error::Api(s) => fail(format!("{what}: {} ({})", s.message, s.code)),
        other => fail(format!("{what}: {other}")),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A client for the inventory's kubeconfig and context (else `KUBECONFIG` / `~/.kube/config`).
pub async fn client(scope: &RenderScope<'_>) -> Result<Client, ActionError> {
    let settings = scope
        .inventory
        .map(|i| i.kubernetes.clone())
        .unwrap_or_default();
    client_for(&settings).await.map_err(fail)
}

/// A client for a kubeconfig and context, with the client's own retry of HTTP 429 turned off
/// so the drain controls it.
pub async fn client_for(settings: &crate::inventory::KubeSettings) -> Result<Client, String> {
    let options = kube::config::KubeConfigOptions {
        context: settings.context.clone(),
        ..Default::default()
    };
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig (KUBECONFIG or ~/.kube/config): {e}"))?,
    };
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

/// What a drain will do with one pod.
#[derive(Clone, Debug, Serialize)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `evict`, `skip` or `blocked`.
    pub action: &'static str,
    pub reason: String,
}

/// A drain's settings with templates rendered.
#[derive(Clone, Debug)]
pub struct Drain {
    pub timeout_secs: f64,
    pub delete_emptydir_data: bool,
    pub ignore_daemonsets: bool,
    pub force: bool,
    pub grace_period: Option<i64>,
    pub disable_eviction: bool,
}

impl DrainSpec {
    fn resolve(&self, scope: &RenderScope<'_>) -> Result<Drain, ActionError> {
        Ok(Drain {
            timeout_secs: render_duration(scope, &self.timeout)?,
            delete_emptydir_data: render_bool(scope, &self.delete_emptydir_data)?,
            ignore_daemonsets: self.ignore_daemonsets,
            force: self.force,
            grace_period: self.grace_period,
            disable_eviction: self.disable_eviction,
        })
    }
}

fn classify(pod: &Pod, spec: &Drain) -> PodPlan {
    let meta = &pod.metadata;
    let mut plan = PodPlan {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        action: "evict",
        reason: String::new(),
    };
    let annotations = meta.annotations.clone().unwrap_or_default();
    if annotations.contains_key("kubernetes.io/config.mirror") {
        plan.action = "skip";
        plan.reason = "mirror pod (managed by the kubelet)".into();
        return plan;
    }
    if meta.deletion_timestamp.is_some() {
        plan.action = "skip";
        plan.reason = "already terminating".into();
        return plan;
    }
    let controller = meta
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.controller == Some(true));
    match &controller {
        Some(o) if o.kind == "DaemonSet" => {
            if spec.ignore_daemonsets {
                plan.action = "skip";
                plan.reason = format!("DaemonSet pod ({}); left alone", o.name);
            } else {
                plan.action = "blocked";
                plan.reason = format!("DaemonSet pod ({}); set ignore_daemonsets: true", o.name);
            }
            return plan;
        }
        None if !spec.force => {
            plan.action = "blocked";
            plan.reason = "not managed by a controller (it would not come back); set force: true to delete it".into();
            return plan;
        }
        None => plan.reason = "not managed by a controller; deleted because force is set".into(),
        Some(o) => plan.reason = format!("managed by {} {}", o.kind, o.name),
    }
    let empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
    if empty_dir {
        if spec.delete_emptydir_data {
            plan.reason.push_str("; its emptyDir data is lost");
        } else {
            plan.action = "blocked";
            plan.reason =
                "uses emptyDir (local data is lost on eviction); set delete_emptydir_data: true"
                    .into();
        }
    }
    plan
}

impl KubeSpec {
    fn node_template(&self) -> &str {
        match self {
            KubeSpec::Cordon(n)
            | KubeSpec::Uncordon(n)
            | KubeSpec::DeleteNode(n)
            | KubeSpec::NodeInfo(n) => n,
            KubeSpec::Nodes => "",
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
        }
    }

    async fn drain_plan(
        &self,
        client: &Client,
        node: &str,
        spec: &Drain,
    ) -> Result<Vec<PodPlan>, ActionError> {
        let pods: Api<Pod> = Api::all(client.clone());
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| api_error(&format!("list pods on {node}"), e))?;
        Ok(list.items.iter().map(|p| classify(p, spec)).collect())
    }

    async fn drain(
        &self,
        ctx: &ActionCtx<'_>,
        client: &Client,
        node: &str,
        spec: &Drain,
    ) -> Result<ActionOutput, ActionError> {
        let nodes: Api<K8sNode> = Api::all(client.clone());
        nodes
            .cordon(node)
            .await
            .map_err(|e| api_error(&format!("cordon {node}"), e))?;
        let plan = self.drain_plan(client, node, spec).await?;
        let blocked: Vec<&PodPlan> = plan.iter().filter(|p| p.action == "blocked").collect();
        if !blocked.is_empty() {
            let list: Vec<String> = blocked
                .iter()
                .map(|p| format!("{}/{}: {}", p.namespace, p.name, p.reason))
                .collect();
            return Err(fail(format!(
                "cannot drain {node}; {} pod(s) would be lost or are not allowed to move:\n  {}",
                blocked.len(),
                list.join("\n  ")
            )));
        }
        let mut pending: Vec<PodPlan> = plan
            .iter()
            .filter(|p| p.action == "evict")
            .cloned()
            .collect();
        let total = pending.len();
        let deadline = Instant::now() + Duration::from_secs_f64(spec.timeout_secs);
        let mut backoff = Duration::from_millis(250);
        let mut blockers: BTreeMap<String, String> = BTreeMap::new();
        let mut evicted: Vec<PodPlan> = Vec::new();
        // Evict (or delete) every pending pod at once; 429s stay pending for the next round.
        while !pending.is_empty() {
            let before = pending.len();
            let mut calls = tokio::task::JoinSet::new();
            for p in pending.drain(..) {
                let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
                let params = DeleteParams {
                    grace_period_seconds: spec.grace_period.map(|g| g.max(0) as u32),
                    ..Default::default()
                };
                let disable = spec.disable_eviction;
                calls.spawn(async move {
                    let r = if disable {
                        api.delete(&p.name, &params).await.map(|_| ())
                    } else {
                        api.evict(
                            &p.name,
                            &EvictParams {
                                delete_options: Some(params),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|_| ())
                    };
                    (p, r)
                });
            }
            while let Some(joined) = calls.join_next().await {
                let Ok((p, r)) = joined else { continue };
                match r {
                    Ok(()) => {
                        ctx.emit(
                            Stream::Medic,
                            &format!(
                                "{} {}/{}",
                                if spec.disable_eviction {
                                    "deleted"
                                } else {
                                    "evicted"
                                },
                                p.namespace,
                                p.name
                            ),
                        );
                        blockers.remove(&format!("{}/{}", p.namespace, p.name));
                        evicted.push(p);
                    }
                    Err(e) if is_not_found(&e) => evicted.push(p),
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        let why = s
                            .details
                            .as_ref()
                            .and_then(|d| d.causes.first())
                            .map(|c| c.message.clone())
                            .unwrap_or(s.message.clone());
                        blockers.insert(format!("{}/{}", p.namespace, p.name), why);
                        pending.push(p);
                    }
                    Err(e) => {
                        return Err(api_error(&format!("evict {}/{}", p.namespace, p.name), e))
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.drain_timeout(client, node, spec, &blockers).await);
            }
            // Budgets free up as replacements start: while evictions make progress, try again
            // soon; back off only while nothing moves.
            if pending.len() < before {
                backoff = Duration::from_millis(250);
            }
            ctx.emit(
                Stream::Medic,
                &format!(
                    "{} pod(s) blocked by disruption budgets; retrying in {:.1}s",
                    pending.len(),
                    backoff.as_secs_f64()
                ),
            );
            sleep_unless_cancelled(&ctx.cancel, backoff.min(deadline - Instant::now())).await?;
            backoff = (backoff * 3 / 2).min(Duration::from_secs(2));
        }
        // Wait until every evicted pod is gone (a replacement has another uid).
        let mut waiting = evicted.clone();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for p in waiting {
                let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
                match api.get_opt(&p.name).await {
                    Ok(Some(pod)) if pod.metadata.uid.as_deref() == Some(p.uid.as_str()) => {
                        still.push(p)
                    }
                    Ok(_) => {}
                    Err(e) => return Err(api_error(&format!("get {}/{}", p.namespace, p.name), e)),
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = waiting
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect();
                return Err(fail(format!(
                    "drain of {node} timed out after {} waiting for pods to terminate: {}",
                    super::wait::human_secs(spec.timeout_secs),
                    names.join(", ")
                )));
            }
            sleep_unless_cancelled(&ctx.cancel, Duration::from_millis(100)).await?;
        }
        let skipped: Vec<&PodPlan> = plan.iter().filter(|p| p.action == "skip").collect();
        Ok(ActionOutput {
            result: json!({"node": node, "evicted": evicted, "skipped": skipped}),
            summary: Some(if total == 0 {
                format!("{node} has nothing to move (already drained)")
            } else {
                format!(
                    "drained {node}: {total} pod(s) moved, {} left alone",
                    skipped.len()
                )
            }),
        })
    }

    async fn drain_timeout(
        &self,
        client: &Client,
        node: &str,
        spec: &Drain,
        blockers: &BTreeMap<String, String>,
    ) -> ActionError {
        let mut budgets: Vec<String> = Vec::new();
        let namespaces: std::collections::BTreeSet<&str> = blockers
            .keys()
            .filter_map(|k| k.split('/').next())
            .collect();
        for ns in namespaces {
            let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
            if let Ok(list) = api.list(&ListParams::default()).await {
                for pdb in list.items {
                    let allowed = pdb
                        .status
                        .as_ref()
                        .and_then(|s| s.disruptions_allowed)
                        .unwrap_or(0);
                    if allowed == 0 {
                        budgets.push(format!(
                            "{ns}/{} (allows 0 disruptions)",
                            pdb.metadata.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        let pods: Vec<String> = blockers
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        fail(format!(
            "drain of {node} timed out after {}: eviction blocked by disruption budgets {} for pods {}",
            super::wait::human_secs(spec.timeout_secs),
            if budgets.is_empty() { "(none found)".to_string() } else { budgets.join(", ") },
            pods.join(", ")
        ))
    }
}

/// A duration that may be a template; literal values are checked at load time.
fn duration_field(f: &Fields<'_>, reader: &mut Reader, default: &str) -> String {
    match f.get("timeout") {
        Some(n) => match reader.scalar(n, "kube timeout") {
            Some(s) if s.as_str().contains("{{") => reader.template(s, TemplateKind::Text),
            Some(_) => {
                reader.duration(n, "kube timeout");
                n.as_scalar()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            }
            None => default.to_string(),
        },
        None => default.to_string(),
    }
}

/// A boolean that may be a template; literal values are checked at load time.
fn bool_field(f: &Fields<'_>, reader: &mut Reader, key: &str, default: bool) -> String {
    match f.get(key) {
        Some(n) => match reader.scalar(n, key) {
            Some(s) if s.as_str().contains("{{") => reader.template(s, TemplateKind::Text),
            Some(s) => {
                let text = s.as_str().to_string();
                reader.bool(n, key).map(|b| b.to_string()).unwrap_or(text)
            }
            None => default.to_string(),
        },
        None => default.to_string(),
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

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let fields = Fields::new(node, "kube", OPS, reader)?;
        let keys: Vec<&str> = fields.keys().map(|k| k.as_str()).collect();
        let [op] = keys.as_slice() else {
            reader.error(
                fields.span(),
                format!("kube needs exactly one operation: {}", OPS.join(", ")),
            );
            return None;
        };
        let body = fields.get(op).expect("listed");
        let scalar = |reader: &mut Reader, n: &Node, what: &str| -> Option<String> {
            let s = reader.scalar(n, what)?;
            Some(reader.template(s, TemplateKind::Text))
        };
        let spec = match *op {
            "cordon" => KubeSpec::Cordon(scalar(reader, body, "kube cordon")?),
            "uncordon" => KubeSpec::Uncordon(scalar(reader, body, "kube uncordon")?),
            "delete_node" => KubeSpec::DeleteNode(scalar(reader, body, "kube delete_node")?),
            "node_info" => KubeSpec::NodeInfo(scalar(reader, body, "kube node_info")?),
            "nodes" => {
                Fields::new(body, "kube nodes", &[], reader)?;
                KubeSpec::Nodes
            }
            _ => {
                let keys: &[&str] = match *op {
                    "drain" => &[
                        "node",
                        "timeout",
                        "delete_emptydir_data",
                        "ignore_daemonsets",
                        "force",
                        "grace_period",
                        "disable_eviction",
                    ],
                    "wait_ready" => &["node", "timeout", "version"],
                    "wait_gone" => &["node", "timeout"],
                    "label" => &["node", "labels"],
                    "unlabel" => &["node", "keys"],
                    "taint" => &["node", "key", "value", "effect"],
                    _ => &["node", "key"],
                };
                let f = Fields::new(body, &format!("kube {op}"), keys, reader)?;
                let Some(node_n) = f.get("node") else {
                    reader.error(&start_span(body), format!("kube {op} needs `node:`"));
                    return None;
                };
                let node = scalar(reader, node_n, "node")?;
                let flag = |reader: &mut Reader, k: &str, d: bool| {
                    f.get(k).and_then(|n| reader.bool(n, k)).unwrap_or(d)
                };
                match *op {
                    "drain" => KubeSpec::Drain(DrainSpec {
                        node,
                        timeout: duration_field(&f, reader, "10m"),
                        delete_emptydir_data: bool_field(&f, reader, "delete_emptydir_data", false),
                        ignore_daemonsets: flag(reader, "ignore_daemonsets", true),
                        force: flag(reader, "force", false),
                        grace_period: f
                            .get("grace_period")
                            .and_then(|n| reader.uint(n, "grace_period"))
                            .map(|g| g as i64),
                        disable_eviction: flag(reader, "disable_eviction", false),
                    }),
                    "wait_ready" => KubeSpec::WaitReady {
                        node,
                        timeout: duration_field(&f, reader, "10m"),
                        version: match f.get("version") {
                            Some(n) => Some(scalar(reader, n, "kube wait_ready version")?),
                            None => None,
                        },
                    },
                    "wait_gone" => KubeSpec::WaitGone {
                        node,
                        timeout: duration_field(&f, reader, "5m"),
                    },
                    "label" => {
                        let mut labels = BTreeMap::new();
                        if let Some(Node::Mapping(m)) = f.get("labels") {
                            for (k, v) in m.iter() {
                                if let Some(s) = reader.scalar(v, "label value") {
                                    labels.insert(
                                        k.as_str().to_string(),
                                        reader.template(s, TemplateKind::Text),
                                    );
                                }
                            }
                        } else {
                            reader.error(f.span(), "kube label needs `labels: {key: value}`");
                            return None;
                        }
                        KubeSpec::Label { node, labels }
                    }
                    "unlabel" => {
                        let keys = match f.get("keys") {
                            Some(Node::Sequence(items)) => items
                                .iter()
                                .filter_map(|i| reader.scalar(i, "key"))
                                .map(|s| s.as_str().to_string())
                                .collect(),
                            Some(n) => vec![reader.scalar(n, "keys")?.as_str().to_string()],
                            None => {
                                reader.error(f.span(), "kube unlabel needs `keys:`");
                                return None;
                            }
                        };
                        KubeSpec::Unlabel { node, keys }
                    }
                    "taint" => {
                        let get = |reader: &mut Reader, k: &str| {
                            f.get(k)
                                .and_then(|n| reader.scalar(n, k))
                                .map(|s| s.as_str().to_string())
                        };
                        let Some(key) = get(reader, "key") else {
                            reader.error(f.span(), "kube taint needs `key:`");
                            return None;
                        };
                        let effect = get(reader, "effect").unwrap_or_else(|| "NoSchedule".into());
                        if !["NoSchedule", "PreferNoSchedule", "NoExecute"]
                            .contains(&effect.as_str())
                        {
                            reader.error(f.span(), format!("kube taint effect must be NoSchedule, PreferNoSchedule or NoExecute, not `{effect}`"));
                        }
                        KubeSpec::Taint {
                            node,
                            key,
                            value: get(reader, "value").unwrap_or_default(),
                            effect,
                        }
                    }
                    _ => {
                        let Some(key) = f
                            .get("key")
                            .and_then(|n| reader.scalar(n, "key"))
                            .map(|s| s.as_str().to_string())
                        else {
                            reader.error(f.span(), "kube untaint needs `key:`");
                            return None;
                        };
                        KubeSpec::Untaint { node, key }
                    }
                }
            }
        };
        Some(spec)
    }

    fn target(&self) -> Option<String> {
        if matches!(self, KubeSpec::Nodes) {
            return Some("every node".into());
        }
        Some(format!("node {}", self.node_template()))
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        let node = scope.render("kube.node", self.node_template(), false)?;
        let drain = match self {
            KubeSpec::Drain(d) => Some(d.resolve(scope)?),
            _ => None,
        };
        let mut lines = vec![match self {
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
            other => format!("kube {} {node}", other.op()),
        }];
        if let Some(d) = &drain {
            // The preview asks the cluster which pods would move and which would block.
            let preview = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let client = client(scope).await?;
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        self.drain_plan(&client, &node, d),
                    )
                    .await
                    .map_err(|_| fail("no answer within 10s"))?
                })
            });
            match preview {
                Ok(plan) if plan.is_empty() => lines.push("preview: no pods on the node".into()),
                Ok(plan) => {
                    for p in plan {
                        lines.push(format!(
                            "preview: {:7} {}/{} — {}",
                            p.action, p.namespace, p.name, p.reason
                        ));
                    }
                }
                Err(e) => lines.push(format!("preview unavailable: {e}")),
            }
        }
        Ok(lines)
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let node = ctx.scope.render("kube.node", self.node_template(), false)?;
        let client = client(ctx.scope).await?;
        let nodes: Api<K8sNode> = Api::all(client.clone());
        let done = |summary: String, result: serde_json::Value| {
            Ok(ActionOutput {
                result,
                summary: Some(summary),
            })
        };
        match self {
            KubeSpec::Cordon(_) => {
                nodes
                    .cordon(&node)
                    .await
                    .map_err(|e| api_error(&format!("cordon {node}"), e))?;
                done(
                    format!("{node} cordoned"),
                    json!({"node": node, "unschedulable": true}),
                )
            }
            KubeSpec::Uncordon(_) => {
                nodes
                    .uncordon(&node)
                    .await
                    .map_err(|e| api_error(&format!("uncordon {node}"), e))?;
                done(
                    format!("{node} uncordoned"),
                    json!({"node": node, "unschedulable": false}),
                )
            }
            KubeSpec::DeleteNode(_) => match nodes.delete(&node, &DeleteParams::default()).await {
                Ok(_) => done(
                    format!("node {node} deleted"),
                    json!({"node": node, "deleted": true}),
                ),
                Err(e) if is_not_found(&e) => done(
                    format!("node {node} is already gone"),
                    json!({"node": node, "deleted": false}),
                ),
                Err(e) => Err(api_error(&format!("delete node {node}"), e)),
            },
            KubeSpec::Nodes => {
                let list = nodes
                    .list(&Default::default())
                    .await
                    .map_err(|e| api_error("list nodes", e))?;
                let infos: Vec<serde_json::Value> = list.items.iter().map(node_info).collect();
                let ready = infos.iter().filter(|i| i["ready"] == true).count();
                done(
                    format!("{} node(s), {ready} Ready", infos.len()),
                    json!({"nodes": infos, "total": infos.len(), "ready": ready}),
                )
            }
            KubeSpec::NodeInfo(_) => {
                let n = nodes
                    .get(&node)
                    .await
                    .map_err(|e| api_error(&format!("get node {node}"), e))?;
                let info = node_info(&n);
                done(
                    format!(
                        "{node}: {}",
                        if info["ready"] == true {
                            "Ready"
                        } else {
                            "NotReady"
                        }
                    ),
                    info,
                )
            }
            KubeSpec::Drain(d) => {
                let d = d.resolve(ctx.scope)?;
                self.drain(ctx, &client, &node, &d).await
            }
            KubeSpec::WaitReady {
                timeout, version, ..
            } => {
                let timeout_secs = render_duration(ctx.scope, timeout)?;
                let version = match version {
                    Some(v) => Some(ctx.scope.render("kube.version", v, false)?),
                    None => None,
                };
                let wanted = match &version {
                    Some(v) => format!("Ready with kubelet {v}"),
                    None => "Ready".to_string(),
                };
                let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
                loop {
                    let state = nodes
                        .get_opt(&node)
                        .await
                        .map_err(|e| api_error(&format!("get node {node}"), e))?;
                    let info = state.as_ref().map(node_info);
                    let seen_version = info
                        .as_ref()
                        .and_then(|i| i["kubelet_version"].as_str())
                        .map(|s| s.to_string());
                    let ready = info.as_ref().is_some_and(|i| i["ready"] == true);
                    let version_ok = version.is_none() || seen_version == version;
                    if let (Some(mut info), true) = (info, ready && version_ok) {
                        info["version"] = json!(seen_version);
                        return done(
                            match &seen_version {
                                Some(v) => format!("{node} is Ready (kubelet {v})"),
                                None => format!("{node} is Ready"),
                            },
                            info,
                        );
                    }
                    if Instant::now() >= deadline {
                        let last = match (&state, &seen_version) {
                            (None, _) => "the node does not exist".to_string(),
                            (Some(_), v) => format!(
                                "it was {} with kubelet {}",
                                if ready { "Ready" } else { "NotReady" },
                                v.as_deref().unwrap_or("(no version reported)")
                            ),
                        };
                        return Err(fail(format!(
                            "node {node} was not {wanted} after {}; last seen: {last}",
                            super::wait::human_secs(timeout_secs)
                        )));
                    }
                    sleep_unless_cancelled(&ctx.cancel, Duration::from_millis(250)).await?;
                }
            }
            KubeSpec::WaitGone { timeout, .. } => {
                let timeout_secs = render_duration(ctx.scope, timeout)?;
                let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
                loop {
                    let state = nodes
                        .get_opt(&node)
                        .await
                        .map_err(|e| api_error(&format!("get node {node}"), e))?;
                    if state.is_none() {
                        return done(
                            format!("{node} is gone"),
                            json!({"node": node, "gone": true}),
                        );
                    }
                    if Instant::now() >= deadline {
                        return Err(fail(format!(
                            "node {node} was not gone after {}",
                            super::wait::human_secs(timeout_secs)
                        )));
                    }
                    sleep_unless_cancelled(&ctx.cancel, Duration::from_millis(250)).await?;
                }
            }
            KubeSpec::Label { labels, .. } => {
                let mut rendered = serde_json::Map::new();
                for (k, v) in labels {
                    rendered.insert(k.clone(), json!(ctx.scope.render("kube.label", v, false)?));
                }
                patch_node(
                    &nodes,
                    &node,
                    "label",
                    json!({"metadata": {"labels": rendered}}),
                )
                .await?;
                done(
                    format!("{node} labelled"),
                    json!({"node": node, "labels": rendered}),
                )
            }
            KubeSpec::Unlabel { keys, .. } => {
                let removed: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|k| (k.clone(), serde_json::Value::Null))
                    .collect();
                patch_node(
                    &nodes,
                    &node,
                    "unlabel",
                    json!({"metadata": {"labels": removed}}),
                )
                .await?;
                done(
                    format!("{node} unlabelled"),
                    json!({"node": node, "removed": keys}),
                )
            }
            KubeSpec::Taint {
                key, value, effect, ..
            } => {
                let mut taints = taints_without(&nodes, &node, key).await?;
                taints.push(json!({"key": key, "value": value, "effect": effect}));
                patch_node(&nodes, &node, "taint", json!({"spec": {"taints": taints}})).await?;
                done(
                    format!("{node} tainted {key}={value}:{effect}"),
                    json!({"node": node, "taints": taints}),
                )
            }
            KubeSpec::Untaint { key, .. } => {
                let taints = taints_without(&nodes, &node, key).await?;
                patch_node(
                    &nodes,
                    &node,
                    "untaint",
                    json!({"spec": {"taints": taints}}),
                )
                .await?;
                done(
                    format!("{node} untainted {key}"),
                    json!({"node": node, "taints": taints}),
                )
            }
        }
    }
}

/// Applies a merge patch to a node.
async fn patch_node(
    nodes: &Api<K8sNode>,
    node: &str,
    what: &str,
    patch: serde_json::Value,
) -> Result<(), ActionError> {
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| api_error(&format!("{what} {node}"), e))
}

/// The node's taints, without the one with `key`.
async fn taints_without(
    nodes: &Api<K8sNode>,
    node: &str,
    key: &str,
) -> Result<Vec<serde_json::Value>, ActionError> {
    let n = nodes
        .get(node)
        .await
        .map_err(|e| api_error(&format!("get node {node}"), e))?;
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
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
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
        "ready": ready,
        "roles": roles,
        "unschedulable": n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        "addresses": status.addresses.unwrap_or_default().into_iter().map(|a| json!({"type": a.type_, "address": a.address})).collect::<Vec<_>>(),
        "kubelet_version": status.node_info.map(|i| i.kubelet_version),
        "labels": n.metadata.labels,
    })
}
