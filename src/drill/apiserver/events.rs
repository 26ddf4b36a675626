//! core/v1 Events the emulator records for what it does, as the cluster's components would:
//! a node cordoned or uncordoned (`NodeNotSchedulable` / `NodeSchedulable`) or turning
//! NotReady / Ready, a pod stopped by a deletion or an eviction (`Killing`), a ReplicaSet's
//! replacement pod (`SuccessfulCreate`), a node deleted (`RemovingNode`). They are ordinary
//! objects of the store: listed per namespace or across all, with field selectors
//! (`involvedObject.name=…`), watched, and shown by `kubectl get events`. At most
//! [`MAX_EVENTS`] are kept, the oldest dropped first (the API server's TTL, bounded by count).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::resources::Resource;
use super::store::now;
use super::ApiServer;

/// Events kept; the oldest are dropped beyond it.
const MAX_EVENTS: usize = 1000;

/// Nanoseconds since the epoch, strictly increasing across calls: an event's name is its
/// object's name and this, in hex, as the API server names them (unique, in time order).
fn unique_nanos() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// What a node's change says, as the kubelet would record it.
pub(super) fn node_changes(before: &Value, after: &Value) -> Vec<(&'static str, &'static str)> {
    let unschedulable = |o: &Value| o["spec"]["unschedulable"] == true;
    let ready = |o: &Value| {
        o["status"]["conditions"].as_array().is_none_or(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let mut out = Vec::new();
    match (unschedulable(before), unschedulable(after)) {
        (false, true) => out.push(("NodeNotSchedulable", "Normal")),
        (true, false) => out.push(("NodeSchedulable", "Normal")),
        _ => {}
    }
    match (ready(before), ready(after)) {
        (true, false) => out.push(("NodeNotReady", "Normal")),
        (false, true) => out.push(("NodeReady", "Normal")),
        _ => {}
    }
    out
}

impl ApiServer {
    /// Records an event about `involved` (namespace `default` for a cluster-scoped object).
    pub(super) fn record_event(
        &self,
        involved: &Value,
        (reason, kind): (&str, &str),
        message: &str,
        component: &str,
    ) {
        let meta = &involved["metadata"];
        let name = meta["name"].as_str().unwrap_or_default();
        let ns = meta["namespace"].as_str().unwrap_or("default");
        let host = involved["spec"]["nodeName"]
            .as_str()
            .or_else(|| (involved["kind"] == "Node").then_some(name))
            .unwrap_or_default();
        let at = now();
        let event = json!({
            "metadata": {"name": format!("{name}.{:016x}", unique_nanos()), "namespace": ns},
            "involvedObject": {
                "kind": involved["kind"], "apiVersion": involved["apiVersion"],
                "namespace": meta["namespace"], "name": name, "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, "host": host},
            "reportingComponent": component,
            "reportingInstance": host,
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        });
        let r = Resource::by_kind("Event").expect("known");
        self.ensure_namespace(ns);
        let _ = self.create(r, ns, event);
        self.drop_old_events();
    }

    /// The events of a node's change (cordon, uncordon, Ready, NotReady).
    pub(super) fn record_node_change(&self, before: &Value, after: &Value) {
        let name = after["metadata"]["name"].as_str().unwrap_or_default();
        for (reason, kind) in node_changes(before, after) {
            let message = match reason {
                "NodeNotSchedulable" => format!("Node {name} status is now: NodeNotSchedulable"),
                "NodeSchedulable" => format!("Node {name} status is now: NodeSchedulable"),
                other => format!("Node {name} status is now: {other}"),
            };
            self.record_event(after, (reason, kind), &message, "kubelet");
        }
    }

    /// A pod's containers stopped by a deletion or an eviction.
    pub(super) fn record_pod_stopping(&self, pod: &Value) {
        let containers: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        for c in containers {
            self.record_event(
                pod,
                ("Killing", "Normal"),
                &format!("Stopping container {c}"),
                "kubelet",
            );
        }
    }

    /// Drops the oldest events beyond [`MAX_EVENTS`].
    fn drop_old_events(&self) {
        let mut st = self.state.lock().expect("state");
        let mut events: Vec<(u64, (&'static str, String, String))> = st
            .objects
            .iter()
            .filter(|((res, _, _), _)| *res == "events")
            .map(|(k, o)| {
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                (rv, k.clone())
            })
            .collect();
        if events.len() <= MAX_EVENTS {
            return;
        }
        events.sort();
        let excess = events.len() - MAX_EVENTS;
        for (_, key) in events.into_iter().take(excess) {
            st.objects.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(unschedulable: bool, ready: &str) -> Value {
        json!({"kind": "Node", "metadata": {"name": "w"}, "spec": {"unschedulable": unschedulable},
               "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn a_node_change_names_what_changed() {
        let ok = node(false, "True");
        assert_eq!(
            node_changes(&ok, &node(true, "True")),
            [("NodeNotSchedulable", "Normal")]
        );
        assert_eq!(
            node_changes(&node(true, "True"), &ok),
            [("NodeSchedulable", "Normal")]
        );
        assert_eq!(
            node_changes(&ok, &node(false, "False")),
            [("NodeNotReady", "Normal")]
        );
        assert!(node_changes(&ok, &ok).is_empty());
    }

    #[tokio::test]
    async fn events_are_recorded_listed_by_namespace_and_the_oldest_dropped() {
        let server = ApiServer::new();
        let nodes = Resource::by_kind("Node").expect("known");
        server.create(nodes, "", node(false, "True")).unwrap();
        server.update(nodes, "", "w", |o| o["spec"]["unschedulable"] = json!(true));
        let ev = Resource::by_kind("Event").expect("known");
        let q = Default::default();
        let listed = server.list(ev, Some("default"), &q);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["reason"], "NodeNotSchedulable");
        assert_eq!(listed[0]["involvedObject"]["name"], "w");
        assert!(listed[0]["lastTimestamp"].is_string());
        for i in 0..MAX_EVENTS + 5 {
            let n = node(i % 2 == 0, "True");
            server.record_node_change(&node(i % 2 == 1, "True"), &n);
        }
        let all = server.list(ev, None, &q);
        assert_eq!(all.len(), MAX_EVENTS);
        assert!(all.iter().all(|e| e["reason"] != "" && e["count"] == 1));
    }
}
