//! The `kubernetes` and `etcd` groups: objects read through the kube client and the etcd
//! transport medic already uses, written as JSON. A failing read is one manifest line with
//! its error; the others are still read.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, LogParams};
use kube::Client;
use serde::Serialize;

use super::bundle::Collected;
use super::collectors::{ApiObject, EtcdQuery};
use super::Window;
use crate::etcd::Transport;
use crate::inventory::Inventory;
use crate::ssh::SshPool;

const KUBE_SYSTEM: &str = "kube-system";

fn json_item<T: Serialize>(
    source: &'static str,
    command: String,
    path: &str,
    started: Instant,
    result: Result<T, String>,
) -> Collected {
    let mut c = Collected {
        source,
        command,
        path: Some(path.to_string()),
        ..Default::default()
    };
    match result {
        Ok(v) => {
            c.data = serde_json::to_vec_pretty(&v).expect("plain data serializes");
            c.exit_code = Some(0);
        }
        Err(e) => {
            c.path = None;
            c.error = Some(e);
        }
    }
    c.duration_ms = started.elapsed().as_millis() as u64;
    c
}

/// When an event last happened (its last, event or creation time), in seconds.
fn event_seconds(e: &Event) -> Option<i64> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

/// Whether an event happened inside the window (by its last or creation time).
fn event_in_window(e: &Event, window: &Window) -> bool {
    match event_seconds(e) {
        Some(s) => {
            let s = s.max(0) as u64;
            window.since.is_none_or(|from| s >= from) && window.until.is_none_or(|to| s <= to)
        }
        None => true,
    }
}

/// Reads one API object (or, for logs, one file per kube-system container).
pub(crate) async fn collect_api(
    client: &Result<Client, String>,
    object: ApiObject,
    path: &str,
    window: &Window,
    max_bytes: usize,
) -> Vec<Collected> {
    let started = Instant::now();
    let client = match client {
        Ok(c) => c.clone(),
        Err(e) => {
            return vec![json_item::<()>(
                "api",
                format!("{object:?}"),
                path,
                started,
                Err(format!("connect to the Kubernetes API: {e}")),
            )]
        }
    };
    let lp = ListParams::default();
    let err = |e: kube::Error| e.to_string();
    match object {
        ApiObject::Nodes => vec![json_item(
            "api",
            "GET /api/v1/nodes".into(),
            path,
            started,
            Api::<Node>::all(client).list(&lp).await.map_err(err),
        )],
        ApiObject::KubeSystemPods => vec![json_item(
            "api",
            "GET /api/v1/namespaces/kube-system/pods".into(),
            path,
            started,
            Api::<Pod>::namespaced(client, KUBE_SYSTEM)
                .list(&lp)
                .await
                .map_err(err),
        )],
        ApiObject::Events => {
            let events = Api::<Event>::all(client).list(&lp).await.map_err(err);
            let events = events.map(|list| {
                let mut kept: Vec<Event> = list
                    .items
                    .into_iter()
                    .filter(|e| event_in_window(e, window))
                    .collect();
                kept.sort_by_key(|e| event_seconds(e).unwrap_or(i64::MIN));
                kept
            });
            vec![json_item(
                "api",
                "GET /api/v1/events (in the window, oldest first)".into(),
                path,
                started,
                events,
            )]
        }
        ApiObject::PodDisruptionBudgets => vec![json_item(
            "api",
            "GET /apis/policy/v1/poddisruptionbudgets".into(),
            path,
            started,
            Api::<PodDisruptionBudget>::all(client)
                .list(&lp)
                .await
                .map_err(err),
        )],
        ApiObject::KubeSystemLogs => pod_logs(client, path, window, max_bytes).await,
    }
}

/// The log of every container of every kube-system pod, since the window's start.
async fn pod_logs(client: Client, dir: &str, window: &Window, max_bytes: usize) -> Vec<Collected> {
    let started = Instant::now();
    let api = Api::<Pod>::namespaced(client, KUBE_SYSTEM);
    let pods = match api.list(&ListParams::default()).await {
        Ok(p) => p,
        Err(e) => {
            return vec![json_item::<()>(
                "api",
                "GET kube-system pod logs".into(),
                dir,
                started,
                Err(e.to_string()),
            )]
        }
    };
    let since_seconds = window
        .since
        .map(|s| (crate::store::now_ms() / 1000).saturating_sub(s).max(1) as i64);
    let mut out = Vec::new();
    for pod in pods.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers = pod
            .spec
            .map(|s| s.containers.into_iter().map(|c| c.name).collect::<Vec<_>>())
            .unwrap_or_default();
        for container in containers {
            let started = Instant::now();
            let params = LogParams {
                container: Some(container.clone()),
                since_seconds,
                limit_bytes: Some(max_bytes as i64),
                timestamps: true,
                ..Default::default()
            };
            let mut c = Collected {
                source: "api",
                command: format!(
                    "GET /api/v1/namespaces/kube-system/pods/{name}/log?container={container}"
                ),
                path: Some(format!("{dir}/{name}_{container}.log")),
                ..Default::default()
            };
            match api.logs(&name, &params).await {
                Ok(text) => {
                    c.truncated = text.len() >= max_bytes;
                    c.data = text.into_bytes();
                    c.exit_code = Some(0);
                }
                Err(e) => {
                    c.path = None;
                    c.error = Some(e.to_string());
                }
            }
            c.duration_ms = started.elapsed().as_millis() as u64;
            out.push(c);
        }
    }
    out
}

/// One etcd query through the inventory's transport.
pub(crate) async fn collect_etcd(
    inventory: &Inventory,
    pool: &SshPool,
    query: EtcdQuery,
    path: &str,
) -> Collected {
    let started = Instant::now();
    let transport = match Transport::choose(inventory, None, None) {
        Ok(t) => t,
        Err(e) => {
            return json_item::<()>(
                "etcd",
                format!("{query:?}"),
                path,
                started,
                Err(e.to_string()),
            )
        }
    };
    let command = format!("{query:?} ({})", transport.describe()).to_lowercase();
    let members = transport.member_list(pool).await.map_err(|e| e.to_string());
    let result = match (query, members) {
        (_, Err(e)) => Err(e),
        (EtcdQuery::Members, Ok(m)) => serde_json::to_value(m).map_err(|e| e.to_string()),
        (EtcdQuery::Health, Ok(m)) => {
            Ok(serde_json::to_value(transport.health(pool, &m).await).expect("serializes"))
        }
        (EtcdQuery::Status, Ok(m)) => {
            let status: Vec<serde_json::Value> = transport
                .status(pool, &m)
                .await
                .into_iter()
                .map(|r| match r {
                    Ok(s) => serde_json::to_value(s).expect("serializes"),
                    Err(e) => serde_json::json!({ "error": e }),
                })
                .collect();
            Ok(serde_json::Value::from(status))
        }
        (EtcdQuery::Alarms, Ok(_)) => transport
            .alarm_list(pool)
            .await
            .map(|a| serde_json::to_value(a).expect("serializes"))
            .map_err(|e| e.to_string()),
    };
    json_item("etcd", command, path, started, result)
}
