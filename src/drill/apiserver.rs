//! A Kubernetes API server emulator, good enough that the stock `kubectl` can `get`, `cordon`,
//! `drain` and `delete` against it, and that the `kube` crate talks to it as to a cluster.
//!
//! 1. Objects (nodes, namespaces, pods, DaemonSets, ReplicaSets, PodDisruptionBudgets) live in
//!    memory as JSON, keyed by resource, namespace and name, with a resourceVersion counter.
//! 2. Discovery (`/api`, `/apis`, resource lists) and `/version` are served as kubectl expects.
//! 3. List with label and field selectors (also as a `Table` for kubectl), get, create, replace,
//!    merge / strategic-merge / JSON patch, delete with a grace period, and watch.
//! 4. The eviction subresource (policy/v1) answers 201, or 429 with a real `Status` when a
//!    PodDisruptionBudget allows no disruption; budgets' allowed disruptions are computed from
//!    the pods as the disruption controller would.
//! 5. A ReplicaSet's pod that is deleted comes back on another schedulable node after a short
//!    delay, so a budget frees up as it would in a cluster.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

type Body = BoxBody<Bytes, Infallible>;

/// How long a pod takes to terminate after a delete with a grace period.
const TERMINATION: Duration = Duration::from_millis(150);
/// How long a ReplicaSet takes to replace a deleted pod.
const RESCHEDULE: Duration = Duration::from_millis(400);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resource {
    name: &'static str,
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    namespaced: bool,
}

const RESOURCES: &[Resource] = &[
    Resource {
        name: "nodes",
        kind: "Node",
        group: "",
        version: "v1",
        namespaced: false,
    },
    Resource {
        name: "namespaces",
        kind: "Namespace",
        group: "",
        version: "v1",
        namespaced: false,
    },
    Resource {
        name: "pods",
        kind: "Pod",
        group: "",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "daemonsets",
        kind: "DaemonSet",
        group: "apps",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "replicasets",
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        group: "policy",
        version: "v1",
        namespaced: true,
    },
];

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn by_kind(kind: &str) -> Option<Resource> {
        RESOURCES.iter().copied().find(|r| r.kind == kind)
    }
}

type Key = (&'static str, String, String);

#[derive(Clone, Debug)]
struct WatchEvent {
    resource: &'static str,
    kind: &'static str,
    object: Value,
}

struct State {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    counter: u64,
}

/// The emulator's state, shared by every connection.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    /// Evictions check a budget and start the deletion as one step, as the API server does.
    evictions: Arc<Mutex<()>>,
    events: broadcast::Sender<WatchEvent>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": if code < 300 {"Success"} else {"Failure"},
           "message": message, "reason": reason, "code": code})
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("valid response")
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Equality-based selector terms, comma-separated: `k=v`, `k==v`, `k!=v`, `k` (present),
/// `!k` (absent), against `value_of(key)` (`None` = absent).
fn terms_match(selector: &str, value_of: impl Fn(&str) -> Option<String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                value_of(k.trim()).as_deref() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                value_of(k.trim()).as_deref() == Some(v.trim_start_matches('=').trim())
            } else if let Some(k) = term.strip_prefix('!') {
                value_of(k.trim()).is_none()
            } else {
                value_of(term).is_some()
            }
        })
}

fn labels_match(selector: &str, labels: &Value) -> bool {
    terms_match(selector, |k| labels[k].as_str().map(String::from))
}

fn field(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        cur = &cur[part];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Field selectors (`spec.nodeName=n1`); a missing field compares as empty, as in Kubernetes.
fn fields_match(selector: &str, obj: &Value) -> bool {
    terms_match(selector, |k| Some(field(obj, k)))
}

/// A PDB's selector (matchLabels only) against a pod's labels.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    match selector["matchLabels"].as_object() {
        Some(m) => m.iter().all(|(k, v)| labels[k] == *v),
        None => selector.as_object().is_some_and(|o| o.is_empty()),
    }
}

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 7386 merge patch (also used for strategic merge patches, whose lists are replaced).
fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().expect("object");
        for (k, v) in p {
            if k.starts_with("$setElementOrder") || k == "$patch" {
                continue;
            }
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        ApiServer {
            evictions: Arc::new(Mutex::new(())),
            state: Arc::new(Mutex::new(State {
                objects: BTreeMap::new(),
                rv: 1,
                counter: 0,
            })),
            events,
        }
    }

    /// Loads seed objects (a YAML list of Kubernetes objects).
    pub fn seed(&self, objects: Vec<Value>) -> Result<(), String> {
        for obj in objects {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let r = Resource::by_kind(&kind)
                .ok_or_else(|| format!("seed: unsupported kind `{kind}`"))?;
            let ns = if r.namespaced {
                obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string()
            } else {
                String::new()
            };
            if r.namespaced {
                self.ensure_namespace(&ns);
            }
            self.create(r, &ns, obj)
                .map_err(|(_, s)| s["message"].as_str().unwrap_or_default().to_string())?;
        }
        Ok(())
    }

    fn ensure_namespace(&self, ns: &str) {
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

    fn emit(&self, resource: &'static str, kind: &'static str, object: &Value) {
        let _ = self.events.send(WatchEvent {
            resource,
            kind,
            object: object.clone(),
        });
    }

    fn create(&self, r: Resource, ns: &str, mut obj: Value) -> Result<Value, (u16, Value)> {
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
            obj["status"]["phase"] = json!("Running");
        }
        st.objects.insert(key, obj.clone());
        drop(st);
        self.emit(r.name, "ADDED", &obj);
        Ok(obj)
    }

    fn get(&self, r: Resource, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("state")
            .objects
            .get(&(r.name, ns.to_string(), name.to_string()))
            .cloned()
    }

    fn update(
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
        Some(out)
    }

    fn remove(&self, r: Resource, ns: &str, name: &str, uid: Option<&Value>) -> Option<Value> {
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
            self.collect_pods_of(name);
        }
        Some(obj)
    }

    /// The pod garbage collector: pods bound to a deleted node go too (a ReplicaSet's are
    /// then recreated elsewhere).
    fn collect_pods_of(&self, node: &str) {
        let pods: Vec<(String, String)> = {
            let st = self.state.lock().expect("state");
            st.objects
                .iter()
                .filter(|((res, _, _), o)| *res == "pods" && o["spec"]["nodeName"] == node)
                .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
                .collect()
        };
        let pod = Resource::by_kind("Pod").expect("known");
        for (ns, name) in pods {
            self.remove(pod, &ns, &name, None);
        }
    }

    /// Deletes an object; a pod with a grace period terminates after a short delay.
    fn delete(&self, r: Resource, ns: &str, name: &str, grace: Option<i64>) -> Option<Value> {
        let obj = self.get(r, ns, name)?;
        if r.kind == "Pod" && grace.unwrap_or(30) > 0 {
            let marked = self.update(r, ns, name, |o| {
                if o["metadata"]["deletionTimestamp"].is_null() {
                    o["metadata"]["deletionTimestamp"] = json!(now());
                    o["metadata"]["deletionGracePeriodSeconds"] = json!(grace.unwrap_or(30));
                }
            })?;
            let server = self.clone();
            let (ns, name, uid) = (
                ns.to_string(),
                name.to_string(),
                obj["metadata"]["uid"].clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(TERMINATION).await;
                server.remove(r, &ns, &name, Some(&uid));
            });
            return Some(marked);
        }
        self.remove(r, ns, name, None)
    }

    /// A ReplicaSet replaces its deleted pod on a schedulable node after a short delay.
    fn after_pod_deleted(&self, pod: &Value) {
        let Some(owner) = pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["kind"] == "ReplicaSet"))
            .cloned()
        else {
            return;
        };
        let server = self.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RESCHEDULE).await;
            let ns = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let rs = Resource::by_kind("ReplicaSet").expect("known");
            if server
                .get(rs, &ns, owner["name"].as_str().unwrap_or_default())
                .is_none()
            {
                return;
            }
            let old_node = pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let target = server.schedulable_node(&old_node);
            let mut fresh = json!({
                "metadata": {
                    "generateName": format!("{}-", owner["name"].as_str().unwrap_or("pod")),
                    "labels": pod["metadata"]["labels"].clone(),
                    "ownerReferences": pod["metadata"]["ownerReferences"].clone(),
                },
                "spec": pod["spec"].clone(),
                "status": {"phase": if target.is_some() { "Running" } else { "Pending" }},
            });
            match target {
                Some(n) => fresh["spec"]["nodeName"] = json!(n),
                None => {
                    fresh["spec"].as_object_mut().map(|s| s.remove("nodeName"));
                }
            }
            if let Some(labels) = fresh["metadata"]["labels"].as_object_mut() {
                labels.remove("pod-template-hash-instance");
            }
            let _ = server.create(Resource::by_kind("Pod").expect("known"), &ns, fresh);
        });
    }

    /// A Ready, schedulable node other than `avoid`, preferring the one with the fewest pods.
    fn schedulable_node(&self, avoid: &str) -> Option<String> {
        let st = self.state.lock().expect("state");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for ((res, _, _), obj) in st.objects.iter() {
            if *res == "nodes" {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                let ready = obj["status"]["conditions"].as_array().is_none_or(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if name != avoid && obj["spec"]["unschedulable"] != true && ready {
                    counts.entry(name.to_string()).or_default();
                }
            }
        }
        for ((res, _, _), obj) in st.objects.iter() {
            if *res == "pods" {
                if let Some(c) =
                    counts.get_mut(obj["spec"]["nodeName"].as_str().unwrap_or_default())
                {
                    *c += 1;
                }
            }
        }
        counts.into_iter().min_by_key(|(_, c)| *c).map(|(n, _)| n)
    }

    /// Allowed disruptions of a budget, from the pods it selects (as the disruption controller).
    fn budget_status(&self, pdb: &Value) -> (i64, i64, i64) {
        let ns = pdb["metadata"]["namespace"].as_str().unwrap_or_default();
        let st = self.state.lock().expect("state");
        let pods: Vec<&Value> = st
            .objects
            .iter()
            .filter(|((res, n, _), o)| {
                *res == "pods"
                    && n == ns
                    && selector_matches(&pdb["spec"]["selector"], &o["metadata"]["labels"])
            })
            .map(|(_, o)| o)
            .collect();
        let expected = pods.len() as i64;
        let healthy = pods
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count() as i64;
        let resolve = |v: &Value| -> Option<i64> {
            match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) if s.ends_with('%') => s
                    .trim_end_matches('%')
                    .parse::<i64>()
                    .ok()
                    .map(|p| (p * expected + 99) / 100),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
        };
        let desired = if let Some(min) = resolve(&pdb["spec"]["minAvailable"]) {
            min
        } else if let Some(max) = resolve(&pdb["spec"]["maxUnavailable"]) {
            (expected - max).max(0)
        } else {
            expected
        };
        ((healthy - desired).max(0), desired, healthy)
    }

    fn with_budget_status(&self, mut pdb: Value) -> Value {
        let (allowed, desired, healthy) = self.budget_status(&pdb);
        let expected = {
            let ns = pdb["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let st = self.state.lock().expect("state");
            st.objects
                .iter()
                .filter(|((res, n, _), o)| {
                    *res == "pods"
                        && *n == ns
                        && selector_matches(&pdb["spec"]["selector"], &o["metadata"]["labels"])
                })
                .count()
        };
        pdb["status"] = json!({"disruptionsAllowed": allowed, "desiredHealthy": desired, "currentHealthy": healthy, "expectedPods": expected, "observedGeneration": 1});
        pdb
    }

    fn evict(&self, ns: &str, name: &str, body: &Value) -> (u16, Value) {
        let _one_at_a_time = self.evictions.lock().expect("evictions lock");
        let pods = Resource::by_kind("Pod").expect("known");
        let Some(pod) = self.get(pods, ns, name) else {
            return (
                404,
                status(404, "NotFound", &format!("pods \"{name}\" not found")),
            );
        };
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return (201, status(201, "", "already terminating"));
        }
        let budgets: Vec<Value> = {
            let st = self.state.lock().expect("state");
            st.objects
                .iter()
                .filter(|((res, n, _), pdb)| {
                    *res == "poddisruptionbudgets"
                        && n == ns
                        && selector_matches(&pdb["spec"]["selector"], &pod["metadata"]["labels"])
                })
                .map(|(_, o)| o.clone())
                .collect()
        };
        if budgets.len() > 1 {
            return (500, status(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."));
        }
        if let Some(pdb) = budgets.first() {
            let (allowed, desired, healthy) = self.budget_status(pdb);
            if allowed <= 0 && pod["status"]["phase"] == "Running" {
                let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                let mut s = status(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                s["details"] = json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently")}]});
                return (429, s);
            }
        }
        let grace = body["deleteOptions"]["gracePeriodSeconds"].as_i64();
        self.delete(pods, ns, name, grace);
        (201, status(201, "", ""))
    }

    fn list(&self, r: Resource, ns: Option<&str>, q: &BTreeMap<String, String>) -> Vec<Value> {
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

    fn table(r: Resource, items: &[Value]) -> Value {
        let age = |o: &Value| {
            let created = o["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok());
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
        };
        let (columns, rows): (Vec<(&str, &str)>, Vec<Vec<Value>>) = match r.kind {
            "Node" => (
                vec![
                    ("Name", "string"),
                    ("Status", "string"),
                    ("Roles", "string"),
                    ("Age", "string"),
                    ("Version", "string"),
                ],
                items
                    .iter()
                    .map(|o| {
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
                    })
                    .collect(),
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
                items
                    .iter()
                    .map(|o| {
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
                    })
                    .collect(),
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

    fn discovery(&self, path: &str, port: u16) -> Option<Value> {
        let resources = |group: &str, version: &str| -> Value {
            let mut list: Vec<Value> = Vec::new();
            for r in RESOURCES.iter().filter(|r| r.group == group) {
                let short: &[&str] = match r.kind {
                    "Node" => &["no"],
                    "Namespace" => &["ns"],
                    "Pod" => &["po"],
                    "DaemonSet" => &["ds"],
                    "ReplicaSet" => &["rs"],
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

    async fn handle(self, req: Request<Incoming>, port: u16) -> Response<Body> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let path = uri.path().trim_end_matches('/').to_string();
        let q = query(&uri);
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let accept = header("accept");
        let content_type = header("content-type");
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        if matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
            return Response::builder()
                .status(200)
                .body(Full::new(Bytes::from("ok")).boxed())
                .expect("valid");
        }
        if method == Method::GET {
            if let Some(doc) = self.discovery(&path, port) {
                return respond(200, &doc);
            }
        }
        // /api/v1/... or /apis/GROUP/VERSION/...
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", g, "v1", rest @ ..] => (*g, rest),
            _ => {
                return respond(
                    404,
                    &status(
                        404,
                        "NotFound",
                        &format!("the server could not find the requested resource ({path})"),
                    ),
                )
            }
        };
        let (ns, resource, name, sub) = match rest {
            ["namespaces", ns, res, tail @ ..] => (
                Some(ns.to_string()),
                *res,
                tail.first().copied(),
                tail.get(1).copied(),
            ),
            [res, tail @ ..] => (None, *res, tail.first().copied(), tail.get(1).copied()),
            [] => return respond(404, &status(404, "NotFound", "no resource")),
        };
        let Some(r) = RESOURCES
            .iter()
            .copied()
            .find(|r| r.name == resource && r.group == group)
        else {
            return respond(
                404,
                &status(
                    404,
                    "NotFound",
                    &format!("the server doesn't have a resource type \"{resource}\""),
                ),
            );
        };
        let scope_ns = if r.namespaced { ns.clone() } else { None };
        let obj_ns = scope_ns.clone().unwrap_or_default();
        match (method, name, sub) {
            (Method::GET, None, _) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(r, scope_ns, q)
            }
            (Method::GET, None, _) => {
                let items = self.list(r, scope_ns.as_deref(), &q);
                if accept.contains("as=Table") {
                    return respond(200, &Self::table(r, &items));
                }
                let rv = self.state.lock().expect("state").rv;
                respond(
                    200,
                    &json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
                )
            }
            (Method::GET, Some(n), _) => match self.get(r, &obj_ns, n) {
                Some(o) if r.kind == "PodDisruptionBudget" => {
                    respond(200, &self.with_budget_status(o))
                }
                Some(o) if accept.contains("as=Table") => respond(200, &Self::table(r, &[o])),
                Some(o) => respond(200, &o),
                None => respond(404, &not_found(r, n)),
            },
            (Method::POST, None, _) => {
                if r.namespaced {
                    self.ensure_namespace(&obj_ns);
                }
                match self.create(r, &obj_ns, body) {
                    Ok(o) => respond(201, &o),
                    Err((c, s)) => respond(c, &s),
                }
            }
            (Method::POST, Some(n), Some("eviction")) if r.kind == "Pod" => {
                let (code, s) = self.evict(&obj_ns, n, &body);
                respond(code, &s)
            }
            (Method::PUT, Some(n), _) => match self.update(r, &obj_ns, n, |o| {
                let meta = o["metadata"].clone();
                *o = body.clone();
                for k in ["uid", "namespace", "creationTimestamp", "deletionTimestamp"] {
                    if !meta[k].is_null() {
                        o["metadata"][k] = meta[k].clone();
                    }
                }
            }) {
                Some(o) => respond(200, &o),
                None => respond(404, &not_found(r, n)),
            },
            (Method::PATCH, Some(n), _) => {
                let Some(current) = self.get(r, &obj_ns, n) else {
                    return respond(404, &not_found(r, n));
                };
                let patched = if content_type.contains("json-patch") {
                    let patch: Result<json_patch::Patch, _> = serde_json::from_value(body.clone());
                    let mut doc = current.clone();
                    match patch
                        .map_err(|e| e.to_string())
                        .and_then(|p| json_patch::patch(&mut doc, &p).map_err(|e| e.to_string()))
                    {
                        Ok(()) => doc,
                        Err(e) => {
                            return respond(
                                422,
                                &status(422, "Invalid", &format!("json patch: {e}")),
                            )
                        }
                    }
                } else {
                    let mut doc = current.clone();
                    merge_patch(&mut doc, &body);
                    doc
                };
                match self.update(r, &obj_ns, n, |o| *o = patched) {
                    Some(o) => respond(200, &o),
                    None => respond(404, &not_found(r, n)),
                }
            }
            (Method::DELETE, Some(n), _) => {
                let grace = q
                    .get("gracePeriodSeconds")
                    .and_then(|g| g.parse().ok())
                    .or(body["gracePeriodSeconds"].as_i64());
                match self.delete(r, &obj_ns, n, grace) {
                    Some(o) => respond(200, &o),
                    None => respond(404, &not_found(r, n)),
                }
            }
            (m, _, _) => respond(
                405,
                &status(
                    405,
                    "MethodNotAllowed",
                    &format!("{m} is not supported here"),
                ),
            ),
        }
    }

    fn watch(
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

    /// Serves on 127.0.0.1:`port` until the process ends.
    pub async fn serve(self, port: u16, ready: impl FnOnce(u16)) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        ready(port);
        loop {
            let (stream, _) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req, port).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    }
}

fn not_found(r: Resource, name: &str) -> Value {
    let mut s = status(404, "NotFound", &format!("{} \"{name}\" not found", r.name));
    s["details"] = json!({"name": name, "kind": r.name});
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(labels_match("app=web,tier", &labels));
        assert!(labels_match("app==web,!missing", &labels));
        assert!(!labels_match("app!=web", &labels));
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert!(fields_match("spec.nodeName=n1", &pod));
        assert!(!fields_match("spec.nodeName!=n1", &pod));
        assert_eq!(percent_decode("spec.nodeName%3Dn1"), "spec.nodeName=n1");
    }

    #[test]
    fn merge_patch_removes_nulls_and_merges_maps() {
        let mut doc = json!({"spec": {"unschedulable": true, "taints": [1]}, "metadata": {"labels": {"a": "1"}}});
        merge_patch(
            &mut doc,
            &json!({"spec": {"unschedulable": null}, "metadata": {"labels": {"b": "2"}}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"taints": [1]}, "metadata": {"labels": {"a": "1", "b": "2"}}})
        );
    }
}
