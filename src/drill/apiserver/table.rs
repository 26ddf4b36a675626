//! The `Table` rendering kubectl asks for (`Accept: ...;as=Table`): nodes, pods, events, and the
//! rest.

use serde_json::{json, Value};

use super::resources::Resource;

pub(super) fn table(r: Resource, items: &[Value]) -> Value {
    let (columns, rows): (Vec<(&str, &str)>, Vec<Vec<Value>>) = match r.kind {
        "Node" => (
            vec![
                ("Name", "string"),
                ("Status", "string"),
                ("Roles", "string"),
                ("Age", "string"),
                ("Version", "string"),
            ],
            items.iter().map(node_row).collect(),
        ),
        "Pod" => (
            vec![
                ("Name", "string"),
                ("Ready", "string"),
                ("Status", "string"),
                ("Restarts", "string"),
                ("Age", "string"),
                ("Node", "string"),
            ],
            items.iter().map(pod_row).collect(),
        ),
        "Event" => (
            vec![
                ("Last Seen", "string"),
                ("Type", "string"),
                ("Reason", "string"),
                ("Object", "string"),
                ("Message", "string"),
            ],
            items.iter().map(event_row).collect(),
        ),
        _ => (
            vec![("Name", "string"), ("Age", "string")],
            items
                .iter()
                .map(|o| vec![o["metadata"]["name"].clone(), json!(age(o))])
                .collect(),
        ),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "columnDefinitions": columns.iter().map(|(n, t)| json!({"name": n, "type": t, "format": if *n == "Name" {"name"} else {""}, "description": n, "priority": 0})).collect::<Vec<_>>(),
        "rows": rows.into_iter().zip(items).map(|(cells, o)| json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})).collect::<Vec<_>>(),
    })
}

/// The AGE column: `42s`, `5m`, `3h`, `2d`.
fn age(o: &Value) -> String {
    since(&o["metadata"]["creationTimestamp"])
}

/// How long ago an RFC 3339 time was: `42s`, `5m`, `3h`, `2d`.
fn since(t: &Value) -> String {
    let created = t.as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
    let secs = created
        .and_then(|c| std::time::SystemTime::now().duration_since(c).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// NAME, STATUS (Ready / NotReady, SchedulingDisabled), ROLES, AGE, VERSION.
fn node_row(o: &Value) -> Vec<Value> {
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True")
        .unwrap_or(false);
    let mut st = if ready {
        "Ready".to_string()
    } else {
        "NotReady".to_string()
    };
    if o["spec"]["unschedulable"] == true {
        st.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(|s| s.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        o["metadata"]["name"].clone(),
        json!(st),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age(o)),
        o["status"]["nodeInfo"]["kubeletVersion"].clone(),
    ]
}

/// NAME, READY, STATUS (the phase, or Terminating), RESTARTS, AGE, NODE.
fn pod_row(o: &Value) -> Vec<Value> {
    let phase = if o["metadata"]["deletionTimestamp"].is_null() {
        o["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_string()
    } else {
        "Terminating".to_string()
    };
    vec![
        o["metadata"]["name"].clone(),
        json!(if phase == "Running" { "1/1" } else { "0/1" }),
        json!(phase),
        json!("0"),
        json!(age(o)),
        o["spec"]["nodeName"].clone(),
    ]
}

/// LAST SEEN, TYPE, REASON, OBJECT (`kind/name`, lowercase kind), MESSAGE.
fn event_row(o: &Value) -> Vec<Value> {
    let involved = &o["involvedObject"];
    vec![
        json!(since(&o["lastTimestamp"])),
        o["type"].clone(),
        o["reason"].clone(),
        json!(format!(
            "{}/{}",
            involved["kind"].as_str().unwrap_or_default().to_lowercase(),
            involved["name"].as_str().unwrap_or_default()
        )),
        o["message"].clone(),
    ]
}
