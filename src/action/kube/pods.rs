//! `kube: {pods: {namespace: NS}}`: the pods of one namespace, read-only, for probes (the
//! control-plane static pods, CoreDNS, pods stuck in CrashLoopBackOff or ImagePullBackOff).
//!
//! Each pod becomes a flat record that `check:` expressions can filter: its node, phase,
//! whether it is Ready, its `component` (the `component` label kubeadm's static pods carry, else
//! `k8s-app`), restarts, and the reasons its containers wait (`CrashLoopBackOff`, ...). At most
//! [`MAX_PODS`] are read (`truncated` says when there were more), so the result stays bounded.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

use super::super::{ActionError, ActionOutput};
use super::client::KubeError;

/// The most pods one `pods` action reads.
pub(super) const MAX_PODS: u32 = 2000;

/// Lists the pods of `namespace`.
pub(super) async fn list(
    client: &kube::Client,
    namespace: &str,
) -> Result<ActionOutput, ActionError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().limit(MAX_PODS))
        .await
        .map_err(|source| KubeError::ListNamespacePods {
            namespace: namespace.to_string(),
            source,
        })?;
    let truncated = list
        .metadata
        .continue_
        .as_deref()
        .is_some_and(|c| !c.is_empty());
    let pods: Vec<serde_json::Value> = list.items.iter().map(pod_info).collect();
    let ready = pods.iter().filter(|p| p["ready"] == true).count();
    let waiting = pods
        .iter()
        .filter(|p| p["reasons"].as_array().is_some_and(|r| !r.is_empty()))
        .count();
    Ok(ActionOutput {
        summary: Some(format!(
            "{} pod(s) in {namespace}, {ready} Ready, {waiting} waiting{}",
            pods.len(),
            if truncated { " (more not read)" } else { "" }
        )),
        result: json!({"pods": pods, "total": pods.len(), "ready": ready, "truncated": truncated}),
    })
}

/// One pod as a flat record.
fn pod_info(p: &Pod) -> serde_json::Value {
    let labels = p.metadata.labels.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let containers: Vec<_> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let reasons: Vec<String> = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect();
    let restarts: i64 = containers.iter().map(|c| i64::from(c.restart_count)).sum();
    let phase = status.phase.unwrap_or_default();
    json!({
        "name": p.metadata.name,
        "namespace": p.metadata.namespace,
        "node": p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "phase": phase,
        "ready": ready,
        "running": phase == "Running" && ready,
        "component": labels.get("component").or_else(|| labels.get("k8s-app")).cloned().unwrap_or_default(),
        "restarts": restarts,
        "reasons": reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_looping_static_pod_is_flattened() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "kube-scheduler-cp-1", "namespace": "kube-system", "labels": {"component": "kube-scheduler"}},
            "spec": {"nodeName": "cp-1", "containers": [{"name": "s"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "s", "image": "i", "imageID": "", "ready": false, "restartCount": 7,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        }))
        .unwrap();
        let v = pod_info(&pod);
        assert_eq!(v["component"], "kube-scheduler");
        assert_eq!(v["node"], "cp-1");
        assert_eq!(v["running"], false);
        assert_eq!(v["restarts"], 7);
        assert_eq!(v["reasons"], json!(["CrashLoopBackOff"]));
    }
}
