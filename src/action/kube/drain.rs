//! `kube: {drain: ...}` with `kubectl drain` semantics.
//!
//! 1. Cordon the node; list its pods by field selector.
//! 2. [`classify`] each pod (pure): skip mirror pods, terminating pods and (by default)
//!    DaemonSet pods; block unmanaged pods unless `force` and emptyDir pods unless
//!    `delete_emptydir_data`. Any blocked pod refuses the whole drain.
//! 3. Evict everything at once through policy/v1 (or delete, with `disable_eviction`); 429s from
//!    disruption budgets stay pending and are retried with backoff until the timeout (the
//!    client's own 429 retry is off).
//! 4. Wait until each evicted pod is gone by uid. A drained node drains again at once.
//!
//! [`preview`] is steps 1–2 without the cordon, for dry-runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams};
use kube::Client;
use serde::Serialize;
use serde_json::json;

use super::super::wait::human_secs;
use super::super::{sleep_unless_cancelled, ActionCtx, ActionError, ActionOutput, Stream};
use super::client::{is_not_found, KubeError};
use super::wait::{await_condition, is_pod_deleted, Polled};
use super::{fail, DrainSpec, RenderScope};

/// What a drain does with one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PodAction {
    Evict,
    Skip,
    Blocked,
}

impl PodAction {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PodAction::Evict => "evict",
            PodAction::Skip => "skip",
            PodAction::Blocked => "blocked",
        }
    }
}

/// What a drain will do with one pod.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub action: PodAction,
    pub reason: String,
}

impl PodPlan {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A drain's settings with templates rendered.
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    pub timeout_secs: f64,
    pub delete_emptydir_data: bool,
    pub ignore_daemonsets: bool,
    pub force: bool,
    pub grace_period: Option<i64>,
    pub disable_eviction: bool,
}

impl DrainSpec {
    pub(crate) fn resolve(&self, scope: &RenderScope<'_>) -> Result<Drain, ActionError> {
        Ok(Drain {
            timeout_secs: super::render_duration(scope, &self.timeout)?,
            delete_emptydir_data: super::render_bool(scope, &self.delete_emptydir_data)?,
            ignore_daemonsets: self.ignore_daemonsets,
            force: self.force,
            grace_period: self.grace_period,
            disable_eviction: self.disable_eviction,
        })
    }
}

/// What the drain does with `pod`, and why (pure: no API call).
pub(crate) fn classify(pod: &Pod, spec: &Drain) -> PodPlan {
    let meta = &pod.metadata;
    let mut plan = PodPlan {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        action: PodAction::Evict,
        reason: String::new(),
    };
    let annotations = meta.annotations.clone().unwrap_or_default();
    if annotations.contains_key("kubernetes.io/config.mirror") {
        plan.action = PodAction::Skip;
        plan.reason = "mirror pod (managed by the kubelet)".into();
        return plan;
    }
    if meta.deletion_timestamp.is_some() {
        plan.action = PodAction::Skip;
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
                plan.action = PodAction::Skip;
                plan.reason = format!("DaemonSet pod ({}); left alone", o.name);
            } else {
                plan.action = PodAction::Blocked;
                plan.reason = format!("DaemonSet pod ({}); set ignore_daemonsets: true", o.name);
            }
            return plan;
        }
        None if !spec.force => {
            plan.action = PodAction::Blocked;
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
            plan.action = PodAction::Blocked;
            plan.reason =
                "uses emptyDir (local data is lost on eviction); set delete_emptydir_data: true"
                    .into();
        }
    }
    plan
}

/// The node's pods, classified.
pub(super) async fn drain_plan(
    client: &Client,
    node: &str,
    spec: &Drain,
) -> Result<Vec<PodPlan>, KubeError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|source| KubeError::ListPods {
            node: node.to_string(),
            source,
        })?;
    Ok(list.items.iter().map(|p| classify(p, spec)).collect())
}

/// The dry-run's view of a drain, from the live cluster: one `preview:` line per pod (the
/// cluster is asked with a 10s limit; a failure is one `preview unavailable` line).
pub(crate) async fn preview(scope: &RenderScope<'_>, node: &str, spec: &Drain) -> Vec<String> {
    let plan = async {
        let client = super::client::client(scope).await?;
        tokio::time::timeout(Duration::from_secs(10), drain_plan(&client, node, spec))
            .await
            .map_err(|_| fail("no answer within 10s"))?
            .map_err(ActionError::from)
    };
    match plan.await {
        Ok(plan) if plan.is_empty() => vec!["preview: no pods on the node".into()],
        Ok(plan) => plan
            .iter()
            .map(|p| {
                format!(
                    "preview: {:7} {}/{} — {}",
                    p.action.as_str(),
                    p.namespace,
                    p.name,
                    p.reason
                )
            })
            .collect(),
        Err(e) => vec![format!("preview unavailable: {e}")],
    }
}

/// Cordons `node`, evicts its pods and waits until they are gone.
pub(crate) async fn drain(
    ctx: &ActionCtx<'_>,
    client: &Client,
    node: &str,
    spec: &Drain,
) -> Result<ActionOutput, ActionError> {
    let nodes: Api<K8sNode> = Api::all(client.clone());
    super::node::mark_unschedulable(&nodes, node).await?;
    let plan = drain_plan(client, node, spec).await?;
    let blocked: Vec<&PodPlan> = plan
        .iter()
        .filter(|p| p.action == PodAction::Blocked)
        .collect();
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
    let pending: Vec<PodPlan> = plan
        .iter()
        .filter(|p| p.action == PodAction::Evict)
        .cloned()
        .collect();
    let total = pending.len();
    let deadline = Instant::now() + Duration::from_secs_f64(spec.timeout_secs);
    let evicted = evict_all(ctx, client, node, spec, pending, deadline).await?;
    wait_terminated(ctx, client, node, spec, &evicted, deadline).await?;
    let skipped: Vec<&PodPlan> = plan
        .iter()
        .filter(|p| p.action == PodAction::Skip)
        .collect();
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

/// One eviction (or deletion) answer: done, or refused by a disruption budget (429) and why.
enum Evicted {
    Done,
    Blocked(String),
}

type Round = tokio::task::JoinSet<(PodPlan, Result<Evicted, KubeError>)>;

/// Evicts (or deletes) every pending pod at once; 429s stay pending for the next round, until
/// `deadline`. Returns the evicted pods.
async fn evict_all(
    ctx: &ActionCtx<'_>,
    client: &Client,
    node: &str,
    spec: &Drain,
    mut pending: Vec<PodPlan>,
    deadline: Instant,
) -> Result<Vec<PodPlan>, ActionError> {
    let mut backoff = Duration::from_millis(250);
    let mut blockers: BTreeMap<String, String> = BTreeMap::new();
    let mut evicted: Vec<PodPlan> = Vec::new();
    while !pending.is_empty() {
        let before = pending.len();
        // A failure returns at once; dropping the round aborts the calls still in flight.
        let mut calls = start_round(client, spec, std::mem::take(&mut pending));
        while let Some(joined) = calls.join_next().await {
            let Ok((p, answer)) = joined else { continue };
            match answer? {
                Evicted::Done => {
                    let verb = if spec.disable_eviction {
                        "deleted"
                    } else {
                        "evicted"
                    };
                    ctx.emit(Stream::Medic, &format!("{verb} {}", p.key()));
                    blockers.remove(&p.key());
                    evicted.push(p);
                }
                Evicted::Blocked(why) => {
                    blockers.insert(p.key(), why);
                    pending.push(p);
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(budget_timeout(client, node, spec, &blockers).await);
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
    Ok(evicted)
}

/// Starts one round of concurrent evictions (or deletions), one task per pod.
fn start_round(client: &Client, spec: &Drain, pods: Vec<PodPlan>) -> Round {
    let mut calls = Round::new();
    for p in pods {
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
                let params = EvictParams {
                    delete_options: Some(params),
                    ..Default::default()
                };
                api.evict(&p.name, &params).await.map(|_| ())
            };
            let answer = eviction_answer(r).map_err(|source| KubeError::Evict {
                pod: p.key(),
                source,
            });
            (p, answer)
        });
    }
    calls
}

/// Classifies an eviction's answer: a pod already gone (404) counts as evicted; a 429 is a
/// disruption budget saying "not now" (with its cause); anything else fails the drain.
fn eviction_answer(r: Result<(), kube::Error>) -> Result<Evicted, kube::Error> {
    match r {
        Ok(()) => Ok(Evicted::Done),
        Err(e) if is_not_found(&e) => Ok(Evicted::Done),
        Err(kube::Error::Api(s)) if s.code == 429 => Ok(Evicted::Blocked(
            s.details
                .as_ref()
                .and_then(|d| d.causes.first())
                .map(|c| c.message.clone())
                .unwrap_or(s.message.clone()),
        )),
        Err(e) => Err(e),
    }
}

/// Waits until every evicted pod is gone (a replacement has another uid).
async fn wait_terminated(
    ctx: &ActionCtx<'_>,
    client: &Client,
    node: &str,
    spec: &Drain,
    evicted: &[PodPlan],
    deadline: Instant,
) -> Result<(), ActionError> {
    // Each poll asks only about the pods still there at the previous one.
    let waiting = std::sync::Mutex::new(evicted.to_vec());
    let poll = || async {
        let current = waiting.lock().expect("waiting lock").clone();
        let mut still = Vec::new();
        for p in current {
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            let pod = api
                .get_opt(&p.name)
                .await
                .map_err(|source| KubeError::GetPod {
                    pod: p.key(),
                    source,
                })?;
            if !is_pod_deleted(&p.uid)(&pod) {
                still.push(p);
            }
        }
        *waiting.lock().expect("waiting lock") = still.clone();
        Ok::<_, ActionError>(still)
    };
    let interval = Duration::from_millis(100);
    match await_condition(&ctx.cancel, deadline, interval, poll, Vec::is_empty).await? {
        Polled::Met(_) => Ok(()),
        Polled::TimedOut(still) => {
            let names: Vec<String> = still.iter().map(PodPlan::key).collect();
            Err(fail(format!(
                "drain of {node} timed out after {} waiting for pods to terminate: {}",
                human_secs(spec.timeout_secs),
                names.join(", ")
            )))
        }
    }
}

/// The timeout while budgets still refused evictions, naming the budgets that allow none.
async fn budget_timeout(
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
        human_secs(spec.timeout_secs),
        if budgets.is_empty() {
            "(none found)".to_string()
        } else {
            budgets.join(", ")
        },
        pods.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::core::response::{StatusCause, StatusDetails};
    use kube::core::Status;

    use super::*;

    fn settings(ignore_daemonsets: bool, force: bool, delete_emptydir_data: bool) -> Drain {
        Drain {
            timeout_secs: 60.0,
            delete_emptydir_data,
            ignore_daemonsets,
            force,
            grace_period: None,
            disable_eviction: false,
        }
    }

    fn pod(owner: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("default".into());
        p.metadata.name = Some("web-0".into());
        p.metadata.uid = Some("u-1".into());
        p.metadata.owner_references = owner.map(|(kind, name)| {
            vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        p
    }

    fn with_empty_dir(mut p: Pod) -> Pod {
        p.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn classification_table() {
        let defaults = settings(true, false, false);
        let mut mirror = pod(None);
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        let mut terminating = pod(Some(("ReplicaSet", "web")));
        terminating.metadata.deletion_timestamp = Some(Time(Default::default()));
        let cases: Vec<(Pod, Drain, PodAction, &str)> = vec![
            (
                pod(Some(("ReplicaSet", "web"))),
                defaults.clone(),
                PodAction::Evict,
                "managed by ReplicaSet web",
            ),
            (
                mirror,
                defaults.clone(),
                PodAction::Skip,
                "mirror pod (managed by the kubelet)",
            ),
            (
                terminating,
                defaults.clone(),
                PodAction::Skip,
                "already terminating",
            ),
            (
                pod(Some(("DaemonSet", "agent"))),
                defaults.clone(),
                PodAction::Skip,
                "DaemonSet pod (agent); left alone",
            ),
            (
                pod(Some(("DaemonSet", "agent"))),
                settings(false, false, false),
                PodAction::Blocked,
                "DaemonSet pod (agent); set ignore_daemonsets: true",
            ),
            (
                pod(None),
                defaults.clone(),
                PodAction::Blocked,
                "not managed by a controller (it would not come back); set force: true to delete it",
            ),
            (
                pod(None),
                settings(true, true, false),
                PodAction::Evict,
                "not managed by a controller; deleted because force is set",
            ),
            (
                with_empty_dir(pod(Some(("StatefulSet", "db")))),
                defaults.clone(),
                PodAction::Blocked,
                "uses emptyDir (local data is lost on eviction); set delete_emptydir_data: true",
            ),
            (
                with_empty_dir(pod(Some(("StatefulSet", "db")))),
                settings(true, false, true),
                PodAction::Evict,
                "managed by StatefulSet db; its emptyDir data is lost",
            ),
        ];
        for (p, spec, action, reason) in cases {
            let plan = classify(&p, &spec);
            assert_eq!((plan.action, plan.reason.as_str()), (action, reason));
            assert_eq!(plan.key(), "default/web-0");
            assert_eq!(plan.uid, "u-1");
        }
    }

    #[test]
    fn a_non_controller_owner_does_not_count() {
        let mut p = pod(Some(("ReplicaSet", "web")));
        p.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert_eq!(
            classify(&p, &settings(true, false, false)).action,
            PodAction::Blocked
        );
    }

    fn api_error(code: u16, cause: Option<&str>) -> kube::Error {
        let mut status = Status::failure(&format!("status {code}"), "").with_code(code);
        if let Some(cause) = cause {
            status = status.with_details(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: vec![StatusCause {
                    reason: String::new(),
                    message: cause.into(),
                    field: String::new(),
                }],
                retry_after_seconds: 0,
            });
        }
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn eviction_answers() {
        assert!(matches!(eviction_answer(Ok(())), Ok(Evicted::Done)));
        assert!(matches!(
            eviction_answer(Err(api_error(404, None))),
            Ok(Evicted::Done)
        ));
        assert!(matches!(
            eviction_answer(Err(api_error(429, None))),
            Ok(Evicted::Blocked(why)) if why == "status 429"
        ));
        assert!(matches!(
            eviction_answer(Err(api_error(429, Some("budget web allows 0")))),
            Ok(Evicted::Blocked(why)) if why == "budget web allows 0"
        ));
        assert!(eviction_answer(Err(api_error(500, None))).is_err());
    }
}
