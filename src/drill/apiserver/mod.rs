//! A Kubernetes API server emulator, good enough that the stock `kubectl` can `get`, `cordon`,
//! `drain` and `delete` against it, and that the `kube` crate talks to it as to a cluster.
//!
//! 1. Objects (nodes, namespaces, pods, DaemonSets, ReplicaSets, PodDisruptionBudgets) live in
//!    memory as JSON, keyed by resource, namespace and name, with a resourceVersion counter
//!    ([`store`], which also serves watches; [`resources`] lists what is served).
//! 2. Discovery (`/api`, `/apis`, resource lists) and `/version` are served as kubectl expects
//!    ([`discovery`]).
//! 3. List with label and field selectors ([`selectors`]; also as a `Table` for kubectl,
//!    [`table`]), get, create, replace, merge / strategic-merge / JSON patch, delete with a
//!    grace period, and watch ([`routes`] maps a request to them, [`response`] answers).
//! 4. The eviction subresource (policy/v1) answers 201, or 429 with a real `Status` when a
//!    PodDisruptionBudget allows no disruption; budgets' allowed disruptions are computed from
//!    the pods as the disruption controller would ([`budgets`]).
//! 5. A ReplicaSet's pod that is deleted comes back on another schedulable node after a short
//!    delay, so a budget frees up as it would in a cluster ([`controllers`]).
//! 6. core/v1 Events for what it does: cordon and uncordon, Ready / NotReady, a pod stopped by
//!    a deletion or eviction, a replacement pod, a node removed ([`events`]).

mod budgets;
mod controllers;
mod discovery;
mod events;
mod pod_status;
mod resources;
mod response;
mod routes;
mod selectors;
mod store;
mod table;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

use resources::Resource;
use store::{State, WatchEvent};

/// The emulator's state, shared by every connection.
#[derive(Clone)]
pub(crate) struct ApiServer {
    state: Arc<Mutex<State>>,
    /// Evictions check a budget and start the deletion as one step, as the API server does.
    evictions: Arc<Mutex<()>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn seed(&self, objects: Vec<Value>) -> Result<(), String> {
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

    /// Serves on 127.0.0.1:`port` until the process ends.
    pub(crate) async fn serve(self, port: u16, ready: impl FnOnce(u16)) -> std::io::Result<()> {
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
