//! PodDisruptionBudgets and the eviction subresource: allowed disruptions computed from the pods
//! a budget selects (as the disruption controller does), and an eviction answered 201, or 429
//! with a real `Status` when the budget allows no disruption.

use serde_json::{json, Value};

use super::resources::Resource;
use super::response::status;
use super::selectors::selector_matches;
use super::ApiServer;

impl ApiServer {
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

    pub(super) fn with_budget_status(&self, mut pdb: Value) -> Value {
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

    pub(super) fn evict(&self, ns: &str, name: &str, body: &Value) -> (u16, Value) {
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
}
