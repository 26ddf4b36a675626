//! Discovery (`/api`, `/apis`, resource lists) and `/version`, as kubectl expects them.

use serde_json::{json, Value};

use super::resources::RESOURCES;

pub(super) fn discovery(path: &str, port: u16) -> Option<Value> {
    let resources = |group: &str, version: &str| -> Value {
        let mut list: Vec<Value> = Vec::new();
        for r in RESOURCES.iter().filter(|r| r.group == group) {
            let short: &[&str] = match r.kind {
                "Node" => &["no"],
                "Namespace" => &["ns"],
                "Pod" => &["po"],
                "DaemonSet" => &["ds"],
                "ReplicaSet" => &["rs"],
                "Event" => &["ev"],
                _ => &["pdb"],
            };
            list.push(json!({"name": r.name, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced, "kind": r.kind, "shortNames": short,
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}));
            if r.kind == "Pod" {
                list.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
                list.push(json!({"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "patch", "update"]}));
            }
            if r.kind == "Node" {
                list.push(json!({"name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node", "verbs": ["get", "patch", "update"]}));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
    };
    let group = |name: &str| json!({"name": name, "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}], "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}});
    Some(match path {
        "/version" => {
            json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0-medic-drill", "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"})
        }
        "/api" => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}]})
        }
        "/apis" => {
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group("apps"), group("policy")]})
        }
        "/apis/apps" => {
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}})
        }
        "/apis/policy" => {
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": "policy", "versions": [{"groupVersion": "policy/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "policy/v1", "version": "v1"}})
        }
        "/api/v1" => resources("", "v1"),
        "/apis/apps/v1" => resources("apps", "v1"),
        "/apis/policy/v1" => resources("policy", "v1"),
        "/healthz" | "/readyz" | "/livez" => return None,
        _ => return None,
    })
}
