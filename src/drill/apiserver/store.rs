//! The object store and its watch: objects as JSON keyed by resource, namespace and name,
//! with a resourceVersion counter; every change is broadcast to the open watches.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::resources::Resource;
use super::response::{status, Body, ChannelBody};
use super::selectors::{fields_match, labels_match};
use super::ApiServer;

type Key = (&'static str, String, String);

#[derive(Clone, Debug)]
pub(super) struct WatchEvent {
    pub(super) resource: &'static str,
    pub(super) kind: &'static str,
    pub(super) object: Value,
}

pub(super) struct State {
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) rv: u64,
    pub(super) counter: u64,
}

pub(super) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl ApiServer {
    pub(super) fn ensure_namespace(&self, ns: &str) {
        let exists = self.state.lock().expect("state").objects.contains_key(&(
            "namespaces",
            String::new(),
            ns.to_string(),
        ));
        if !exists {
            let r = Resource::by_kind("Namespace").expect("known");
            let _ = self.create(
                r,
                "",
                json!({"metadata": {"name": ns}, "status": {"phase": "Active"}}),
            );
        }
    }

    pub(super) fn emit(&self, resource: &'static str, kind: &'static str, object: &Value) {
        let _ = self.events.send(WatchEvent {
            resource,
            kind,
            object: object.clone(),
        });
    }

    pub(super) fn create(
        &self,
        r: Resource,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, (u16, Value)> {
        let mut st = self.state.lock().expect("state");
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = if name.is_empty() {
            match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    st.counter += 1;
                    format!(
                        "{prefix}{:05x}",
                        st.counter.wrapping_mul(2654435761) & 0xfffff
                    )
                }
                None => return Err((422, status(422, "Invalid", "metadata.name is required"))),
            }
        } else {
            name
        };
        let key = (r.name, ns.to_string(), name.clone());
        if st.objects.contains_key(&key) {
            return Err((
                409,
                status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", r.name),
                ),
            ));
        }
        st.rv += 1;
        st.counter += 1;
        let rv = st.rv;
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if r.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            rv,
            st.counter & 0xffff,
            rv * 7919
        ));
        meta["resourceVersion"] = json!(rv.to_string());
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!(now());
        }
        if r.kind == "Pod" && obj["status"]["phase"].is_null() {
            obj["status"] = super::pod_status::running_status(&obj["spec"]);
        }
        st.objects.insert(key, obj.clone());
        drop(st);
        self.emit(r.name, "ADDED", &obj);
        Ok(obj)
    }

    pub(super) fn get(&self, r: Resource, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("state")
            .objects
            .get(&(r.name, ns.to_string(), name.to_string()))
            .cloned()
    }

    pub(super) fn update(
        &self,
        r: Resource,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut st = self.state.lock().expect("state");
        st.rv += 1;
        let rv = st.rv;
        let obj = st
            .objects
            .get_mut(&(r.name, ns.to_string(), name.to_string()))?;
        let uid = obj["metadata"]["uid"].clone();
        let created = obj["metadata"]["creationTimestamp"].clone();
        let before = (r.kind == "Node").then(|| obj.clone());
        f(obj);
        obj["metadata"]["uid"] = uid;
        obj["metadata"]["creationTimestamp"] = created;
        obj["metadata"]["name"] = json!(name);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["kind"] = json!(r.kind);
        obj["apiVersion"] = json!(r.api_version());
        let out = obj.clone();
        drop(st);
        self.emit(r.name, "MODIFIED", &out);
        if let Some(before) = before {
            self.record_node_change(&before, &out);
        }
        Some(out)
    }

    pub(super) fn remove(
        &self,
        r: Resource,
        ns: &str,
        name: &str,
        uid: Option<&Value>,
    ) -> Option<Value> {
        let mut st = self.state.lock().expect("state");
        let key = (r.name, ns.to_string(), name.to_string());
        if let Some(uid) = uid {
            if st.objects.get(&key).map(|o| &o["metadata"]["uid"]) != Some(uid) {
                return None;
            }
        }
        let obj = st.objects.remove(&key)?;
        st.rv += 1;
        drop(st);
        self.emit(r.name, "DELETED", &obj);
        if r.kind == "Pod" {
            self.after_pod_deleted(&obj);
        }
        if r.kind == "Node" {
            self.record_event(
                &obj,
                ("RemovingNode", "Normal"),
                &format!("Node {name} event: Removing Node {name} from Controller"),
                "node-controller",
            );
            self.collect_pods_of(name);
        }
        Some(obj)
    }

    pub(super) fn list(
        &self,
        r: Resource,
        ns: Option<&str>,
        q: &BTreeMap<String, String>,
    ) -> Vec<Value> {
        let st = self.state.lock().expect("state");
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((res, n, _), o)| {
                *res == r.name
                    && ns.is_none_or(|want| want == n)
                    && q.get("labelSelector")
                        .is_none_or(|s| labels_match(s, &o["metadata"]["labels"]))
                    && q.get("fieldSelector").is_none_or(|s| fields_match(s, o))
            })
            .map(|(_, o)| o.clone())
            .collect();
        drop(st);
        if r.kind == "PodDisruptionBudget" {
            return items
                .into_iter()
                .map(|p| self.with_budget_status(p))
                .collect();
        }
        items
    }

    pub(super) fn watch(
        &self,
        r: Resource,
        ns: Option<String>,
        q: BTreeMap<String, String>,
    ) -> Response<Body> {
        let mut rx = self.events.subscribe();
        let (tx, body_rx) = mpsc::channel::<Bytes>(64);
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let initial = if since == 0 {
            self.list(r, ns.as_deref(), &q)
        } else {
            Vec::new()
        };
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(300)
            .min(1800);
        tokio::spawn(async move {
            let line = |kind: &str, o: &Value| {
                Bytes::from(format!("{}\n", json!({"type": kind, "object": o})))
            };
            for o in initial {
                if tx.send(line("ADDED", &o)).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    ev = rx.recv() => match ev {
                        Ok(ev) => {
                            let o = &ev.object;
                            let rv: u64 = o["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
                            let ns_ok = ns.as_ref().is_none_or(|n| o["metadata"]["namespace"].as_str() == Some(n));
                            let sel_ok = q.get("labelSelector").is_none_or(|s| labels_match(s, &o["metadata"]["labels"]))
                                && q.get("fieldSelector").is_none_or(|s| fields_match(s, o));
                            if ev.resource == r.name && ns_ok && sel_ok && (since == 0 || rv > since || ev.kind == "DELETED") && tx.send(line(ev.kind, o)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    }
                }
            }
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(ChannelBody(body_rx).boxed())
            .expect("valid response")
    }
}
