//! The kube-system pods a kubeadm cluster has besides kube-proxy, as the drill's API emulator
//! shows them: each control-plane node's static pods (kube-apiserver, kube-controller-manager,
//! kube-scheduler, etcd — mirror pods, which a drain skips) and CoreDNS (a Deployment's two
//! pods on control-plane nodes). A joining control-plane node's kubelet posts its static pods
//! (`kubelet.rs`). They are Running and Ready (the emulator's default status for a pod, `apiserver/pod_status.rs`) until a
//! test changes one with `kubectl patch pod … --subresource=status`.

use serde_json::{json, Value};

use super::state::Drill;

/// The control-plane components kubeadm runs as static pods.
pub(crate) const STATIC_COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// The static (mirror) pods of control-plane node `node`, named as kubeadm's are.
pub(crate) fn static_pods(node: &str) -> Vec<Value> {
    STATIC_COMPONENTS
        .iter()
        .map(|c| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("{c}-{node}"), "namespace": "kube-system",
                    "labels": {"component": c, "tier": "control-plane"},
                    "annotations": {"kubernetes.io/config.mirror": "drill", "kubernetes.io/config.source": "file"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": format!("node-{node}"), "controller": true}],
                },
                "spec": {"nodeName": node, "priorityClassName": "system-node-critical",
                    "containers": [{"name": c, "image": format!("registry.k8s.io/{c}")}]},
            })
        })
        .collect()
}

/// CoreDNS's ReplicaSet and its two pods, on the first control-plane nodes.
pub(super) fn coredns(drill: &Drill) -> Vec<Value> {
    let rs = "coredns-7db6d8ff4d";
    let hosts: Vec<&str> = drill
        .nodes
        .iter()
        .filter(|n| n.control_plane)
        .map(|n| n.name.as_str())
        .collect();
    let mut objects = vec![
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": rs, "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}, "spec": {"replicas": 2, "selector": {"matchLabels": {"k8s-app": "kube-dns"}}}}),
    ];
    if hosts.is_empty() {
        return objects;
    }
    for (i, suffix) in ["5x8kq", "b7n2w"].iter().enumerate() {
        objects.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{rs}-{suffix}"), "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("rs-{rs}"), "controller": true}],
            },
            "spec": {"nodeName": hosts[i % hosts.len()], "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.11.1"}]},
        }));
    }
    objects
}
