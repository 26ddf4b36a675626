//! The seed of the API emulator: the objects `medic drill up` writes (the nodes and a realistic
//! workload) and `medic drill apiserver --seed` reads.

use marked_yaml::Node;
use serde_json::{json, Value};

use super::kubelet::{kube_proxy_pod, node_object};
use super::state::{random_hex, Drill};

fn rs_pod(name: &str, rs: &str, app: &str, node: &str, empty_dir: bool) -> serde_json::Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default", "labels": {"app": app},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("rs-{rs}"), "controller": true}],
        },
        "spec": {"nodeName": node, "containers": [{"name": app, "image": format!("registry.example/{app}:1")}]},
    });
    if empty_dir {
        pod["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    }
    pod
}

/// The nodes and a realistic workload: a Deployment's pods (ReplicaSet `web-…`, under a budget),
/// a second Deployment, a cache pod with emptyDir, and kube-proxy (a DaemonSet) on every node.
pub(super) fn seed(drill: &Drill) -> serde_json::Value {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-proxy", "namespace": "kube-system"}, "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}}}}),
    ];
    for n in &drill.nodes {
        objects.push(node_object(n, true));
        objects.push(kube_proxy_pod(&n.name));
        if n.control_plane && n.joined {
            objects.extend(super::system_pods::static_pods(&n.name));
        }
    }
    objects.extend(super::system_pods::coredns(drill));
    let workers: Vec<&str> = drill
        .nodes
        .iter()
        .filter(|n| !n.control_plane)
        .map(|n| n.name.as_str())
        .collect();
    let hosts: Vec<&str> = if workers.is_empty() {
        drill.nodes.iter().map(|n| n.name.as_str()).collect()
    } else {
        workers
    };
    let deployments = [
        ("web", "web-7c9d6f8b4", 4usize),
        ("api", "api-5b8c7d9f6", 2),
    ];
    let mut k = 0;
    for (app, rs, replicas) in deployments {
        objects.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": rs, "namespace": "default", "labels": {"app": app}}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}}}));
        for i in 0..replicas {
            let suffix = &random_hex(3).unwrap_or_else(|_| format!("{i:06}"))[..5];
            objects.push(rs_pod(
                &format!("{rs}-{suffix}"),
                rs,
                app,
                hosts[k % hosts.len()],
                false,
            ));
            k += 1;
        }
    }
    objects.push(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "default"}, "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}}));
    objects.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "cache-6d5f4c8b7", "namespace": "default", "labels": {"app": "cache"}}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cache"}}}}));
    objects.push(rs_pod(
        "cache-6d5f4c8b7-x2k9p",
        "cache-6d5f4c8b7",
        "cache",
        hosts[hosts.len() - 1],
        true,
    ));
    serde_json::Value::Array(objects)
}

/// YAML (as marked_yaml reads it) to JSON, typing unquoted scalars as YAML 1.2 core does:
/// `true`/`false`, integers, floats and `null` become JSON values, the rest strings.
fn yaml_to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return Value::String(text.to_string());
            }
            match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" | "~" | "" => Value::Null,
                _ => {
                    if let Ok(i) = text.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(f) = text
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && text.contains('.'))
                    {
                        Value::from(f)
                    } else {
                        Value::String(text.to_string())
                    }
                }
            }
        }
        Node::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), yaml_to_json(v)))
                .collect(),
        ),
    }
}

/// Reads a seed file: a YAML list of Kubernetes objects.
pub(crate) fn read_seed(path: &std::path::Path) -> Result<Vec<Value>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read seed {}: {e}", path.display()))?;
    // With coercion "prevented", marked_yaml remembers which scalars were plain (unquoted).
    let options = marked_yaml::LoaderOptions::default()
        .toplevel_sequence()
        .prevent_coercion(true);
    let node = marked_yaml::parse_yaml_with_options(0, &text, options)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match yaml_to_json(&node) {
        Value::Array(items) => Ok(items),
        _ => Err(format!(
            "{}: the seed must be a YAML list of objects",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_typed_unless_quoted() {
        let options = marked_yaml::LoaderOptions::default().prevent_coercion(true);
        let node = marked_yaml::parse_yaml_with_options(
            0,
            "a: true\nb: \"true\"\nc: 3\nd: 1.5\ne: x\nf: null\ng: '7'\nh: \"\"\n",
            options,
        )
        .unwrap();
        assert_eq!(
            yaml_to_json(&node),
            serde_json::json!({"a": true, "b": "true", "c": 3, "d": 1.5, "e": "x", "f": null, "g": "7", "h": ""})
        );
    }
}
