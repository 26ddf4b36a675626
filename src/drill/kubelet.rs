//! What a node's kubelet does to the Kubernetes API: the Node object it registers, its status
//! (Ready / NotReady at the running kubelet's version), the DaemonSet pod a joined node runs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::error::{DrillError, Failure, NodeApiError};
use super::state::{Drill, DrillNode};

/// The Node object the kubelet of `node` registers.
pub(crate) fn node_object(node: &DrillNode, ready: bool) -> serde_json::Value {
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
    });
    if node.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {},
        "status": node_status(node, ready),
    });
    if node.control_plane {
        obj["spec"]["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    obj
}

pub(crate) fn node_status(node: &DrillNode, ready: bool) -> serde_json::Value {
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    };
    json!({
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}],
        "nodeInfo": {"kubeletVersion": node.kubelet_version.clone().unwrap_or_else(|| node.installed_kubelet())},
        "addresses": [
            {"type": "InternalIP", "address": node.address},
            {"type": "Hostname", "address": node.name},
        ],
    })
}

/// The DaemonSet pod a joined node runs.
pub(crate) fn kube_proxy_pod(node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("kube-proxy-{node}"), "namespace": "kube-system",
            "labels": {"k8s-app": "kube-proxy"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy", "uid": "ds-kube-proxy", "controller": true}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy"}]},
    })
}

async fn kube_client(drill: &Drill) -> Result<kube::Client, NodeApiError> {
    crate::action::kube::client_for(&crate::inventory::KubeSettings {
        kubeconfig: Some(drill.kubeconfig()),
        context: None,
    })
    .await
    .map_err(NodeApiError::Client)
}

/// The API's Node objects by name (as JSON).
pub(super) async fn api_nodes(
    drill: &Drill,
) -> Result<BTreeMap<String, serde_json::Value>, NodeApiError> {
    let client = kube_client(drill).await?;
    let nodes: Api<K8sNode> = Api::all(client);
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|source| NodeApiError::ListNodes { source })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|n| {
            let v = serde_json::to_value(&n).ok()?;
            Some((n.metadata.name.clone()?, v))
        })
        .collect())
}

/// Registers the node (or updates its status) as its kubelet does.
async fn post_node_status(
    drill: &Drill,
    node: &DrillNode,
    ready: bool,
) -> Result<(), NodeApiError> {
    let name = node.name.as_str();
    let client = kube_client(drill).await?;
    let nodes: Api<K8sNode> = Api::all(client.clone());
    let exists = nodes
        .get_opt(name)
        .await
        .map_err(|source| NodeApiError::GetNode {
            name: name.to_string(),
            source,
        })?
        .is_some();
    if exists {
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": node_status(node, ready)})),
            )
            .await
            .map_err(|source| NodeApiError::UpdateNode {
                name: name.to_string(),
                source,
            })?;
    } else if ready {
        let decode = |source| NodeApiError::Decode { source };
        let obj: K8sNode = serde_json::from_value(node_object(node, true)).map_err(decode)?;
        nodes
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|source| NodeApiError::RegisterNode {
                name: name.to_string(),
                source,
            })?;
        let pods: Api<Pod> = Api::namespaced(client, "kube-system");
        let pod: Pod = serde_json::from_value(kube_proxy_pod(name)).map_err(decode)?;
        // Already there when the Node was deleted and registered again: fine.
        let _ = pods.create(&PostParams::default(), &pod).await;
        if node.control_plane {
            for p in super::system_pods::static_pods(name) {
                let pod: Pod = serde_json::from_value(p).map_err(decode)?;
                let _ = pods.create(&PostParams::default(), &pod).await;
            }
        }
    }
    Ok(())
}

/// Starts or stops the kubelet service of `name`; a joined node's status follows.
pub(crate) async fn set_kubelet(
    drill: &mut Drill,
    name: &str,
    running: bool,
) -> Result<(), DrillError> {
    let (joined, control_plane) = {
        let n = drill.node_mut(name)?;
        n.kubelet = running;
        n.kubelet_version = running.then(|| n.installed_kubelet());
        (n.joined, n.control_plane)
    };
    if running && joined && control_plane {
        // kubeadm runs etcd as a static pod: a starting kubelet starts it again.
        let has_data = drill.etcd_data_dir(name).join("member").exists();
        let alive = drill.node(name)?.etcd.is_some_and(|p| p.alive());
        if has_data && !alive {
            let own = format!("{name}={}", drill.peer_url(drill.node(name)?));
            drill.start_etcd(name, &own, "existing")?;
        }
    }
    if joined {
        post_node_status(drill, drill.node(name)?, running)
            .await
            .map_err(|source| Failure::Kubelet {
                node: name.to_string(),
                source,
            })?;
    }
    Ok(())
}
