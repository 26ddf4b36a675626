//! Drift facts from the Kubernetes API (`crate::engine::read_facts`): for the nodes a plan
//! touches, each Node's readiness, cordon and kubelet version; for each drain of the plan,
//! the pods it would evict and those that block it. Each fact is a readable label and a
//! value, so a difference names itself (`node cp-2: state was Ready at approve, now
//! NotReady`; `drain cp-2: pod kube-system/x is new since approve: evict (…)`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::api::Api;

use super::drain::{drain_plan, PodAction};
use super::KubeSpec;
use crate::action::{ActionSpec, Plan, RenderScope, Touch};

/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kubernetes facts of `plan`, when it has a `kube` action (else none: a plan that never
/// talks to the API server does not depend on it). `scope_of(leaf)` renders a leaf's
/// templates.
pub(crate) async fn kube_facts<'a>(
    plan: &Plan,
    scope_of: &(dyn Fn(usize) -> RenderScope<'a> + Sync),
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut nodes = BTreeSet::new();
    let mut drains = Vec::new();
    let mut uses_kube = false;
    for (i, n) in plan.nodes().iter().enumerate() {
        let Some(action) = n.action.as_ref().filter(|_| n.is_leaf()) else {
            continue;
        };
        let scope = scope_of(i);
        for touch in action.touches(&scope) {
            if let Touch::Node(name) = touch {
                nodes.insert(name);
            }
        }
        if let ActionSpec::Kube(k) = action {
            uses_kube = true;
            if let KubeSpec::Drain(d) = k {
                if let (Ok(node), Ok(spec)) =
                    (scope.render("kube.node", &d.node, false), d.resolve(&scope))
                {
                    drains.push((node, spec));
                }
            }
        }
    }
    if !uses_kube {
        return out;
    }
    let client = match super::client::client(&scope_of(0)).await {
        Ok(c) => c,
        Err(e) => {
            out.insert("kubernetes: API".into(), format!("unavailable ({e})"));
            return out;
        }
    };
    let api: Api<K8sNode> = Api::all(client.clone());
    for name in &nodes {
        out.extend(node_facts(&api, name).await);
    }
    for (node, spec) in &drains {
        let label = format!("drain {node}");
        match tokio::time::timeout(READ_TIMEOUT, drain_plan(&client, node, spec)).await {
            Ok(Ok(pods)) => {
                for p in pods.iter().filter(|p| p.action != PodAction::Skip) {
                    out.insert(
                        format!("{label}: pod {}/{}", p.namespace, p.name),
                        format!("{} ({})", p.action.as_str(), p.reason),
                    );
                }
            }
            Ok(Err(e)) => {
                out.insert(format!("{label}: pods"), format!("unavailable ({e})"));
            }
            Err(_) => {
                out.insert(format!("{label}: pods"), "no answer within 10s".into());
            }
        }
    }
    out
}

/// One Node's `state` (Ready, NotReady, Unknown, not found), `scheduling` (schedulable,
/// cordoned) and `kubelet` version.
async fn node_facts(api: &Api<K8sNode>, name: &str) -> BTreeMap<String, String> {
    let label = |what: &str| format!("node {name}: {what}");
    let node = match tokio::time::timeout(READ_TIMEOUT, api.get_opt(name)).await {
        Ok(Ok(Some(node))) => node,
        Ok(Ok(None)) => return BTreeMap::from([(label("state"), "not found".into())]),
        Ok(Err(e)) => return BTreeMap::from([(label("state"), format!("unavailable ({e})"))]),
        Err(_) => return BTreeMap::from([(label("state"), "no answer within 10s".into())]),
    };
    let status = node.status.unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| match c.status.as_str() {
            "True" => "Ready",
            "False" => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let cordoned = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let kubelet = status
        .node_info
        .map(|i| i.kubelet_version)
        .unwrap_or_else(|| "unknown".into());
    BTreeMap::from([
        (label("state"), ready.to_string()),
        (
            label("scheduling"),
            if cordoned { "cordoned" } else { "schedulable" }.to_string(),
        ),
        (label("kubelet"), kubelet),
    ])
}

/// Whether `plan` drains a node: idempotent, but it moves workloads, so the drift gate
/// checks its preview before the run like a destructive phase.
pub(crate) fn drains(plan: &Plan) -> bool {
    plan.nodes()
        .iter()
        .any(|n| n.is_leaf() && matches!(n.action, Some(ActionSpec::Kube(KubeSpec::Drain(_)))))
}
