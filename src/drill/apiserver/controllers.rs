//! What the cluster's controllers do after a change: a pod deleted with a grace period
//! terminates after a short delay, a ReplicaSet replaces a deleted pod on a schedulable node,
//! and a deleted node's pods are garbage-collected.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::resources::Resource;
use super::store::now;
use super::ApiServer;

/// How long a pod takes to terminate after a delete with a grace period.
const TERMINATION: Duration = Duration::from_millis(150);
/// How long a ReplicaSet takes to replace a deleted pod.
const RESCHEDULE: Duration = Duration::from_millis(400);

impl ApiServer {
    /// then recreated elsewhere).
    pub(super) fn collect_pods_of(&self, node: &str) {
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
    pub(super) fn delete(
        &self,
        r: Resource,
        ns: &str,
        name: &str,
        grace: Option<i64>,
    ) -> Option<Value> {
        let obj = self.get(r, ns, name)?;
        if r.kind == "Pod" && obj["metadata"]["deletionTimestamp"].is_null() {
            self.record_pod_stopping(&obj);
        }
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
    pub(super) fn after_pod_deleted(&self, pod: &Value) {
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
                // No status: the store gives a scheduled pod a kubelet's Running and Ready.
                "status": if target.is_some() { json!({}) } else { json!({"phase": "Pending"}) },
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
            if let Ok(created) = server.create(Resource::by_kind("Pod").expect("known"), &ns, fresh)
            {
                if let Some(rs_obj) =
                    server.get(rs, &ns, owner["name"].as_str().unwrap_or_default())
                {
                    let pod_name = created["metadata"]["name"].as_str().unwrap_or_default();
                    server.record_event(
                        &rs_obj,
                        ("SuccessfulCreate", "Normal"),
                        &format!("Created pod: {pod_name}"),
                        "replicaset-controller",
                    );
                }
            }
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
}
