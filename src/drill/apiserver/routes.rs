//! Routing one request: health, discovery, then `/api/v1/...` and `/apis/GROUP/v1/...` to list,
//! get, create, replace, patch (merge, strategic merge, JSON patch), delete, evict and watch.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};

use super::discovery::discovery;
use super::resources::{Resource, RESOURCES};
use super::response::{not_found, respond, status, Body};
use super::selectors::query;
use super::table::table;
use super::ApiServer;

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

/// The parts of a request the routes read; the body is JSON (`null` when empty or not JSON).
struct Call {
    method: Method,
    path: String,
    q: BTreeMap<String, String>,
    accept: String,
    content_type: String,
    body: Value,
}

impl Call {
    async fn read(req: Request<Incoming>) -> Call {
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
        Call {
            method,
            path,
            q,
            accept,
            content_type,
            body,
        }
    }
}

/// What a resource path names: the resource, the namespace it is scoped to (namespaced
/// resources only), and an object name and subresource.
#[derive(Debug)]
struct Target {
    r: Resource,
    scope_ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    /// `/api/v1/...` or `/apis/GROUP/VERSION/...`; the `Status` of a 404 for anything else.
    fn resolve(path: &str) -> Result<Target, Value> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", g, "v1", rest @ ..] => (*g, rest),
            _ => {
                return Err(status(
                    404,
                    "NotFound",
                    &format!("the server could not find the requested resource ({path})"),
                ))
            }
        };
        let (ns, resource, tail) = match rest {
            ["namespaces", ns, res, tail @ ..] => (Some(ns.to_string()), *res, tail),
            [res, tail @ ..] => (None, *res, tail),
            [] => return Err(status(404, "NotFound", "no resource")),
        };
        let Some(r) = RESOURCES
            .iter()
            .copied()
            .find(|r| r.name == resource && r.group == group)
        else {
            return Err(status(
                404,
                "NotFound",
                &format!("the server doesn't have a resource type \"{resource}\""),
            ));
        };
        Ok(Target {
            r,
            scope_ns: if r.namespaced { ns } else { None },
            name: tail.first().map(|s| s.to_string()),
            sub: tail.get(1).map(|s| s.to_string()),
        })
    }

    /// The namespace of the object (empty for cluster-scoped resources).
    fn obj_ns(&self) -> String {
        self.scope_ns.clone().unwrap_or_default()
    }
}

/// The document a merge, strategic merge or JSON patch makes of `current`; the `Status` of a
/// 422 for a JSON patch that does not apply.
fn patched(current: &Value, body: &Value, content_type: &str) -> Result<Value, Value> {
    let mut doc = current.clone();
    if content_type.contains("json-patch") {
        let patch: Result<json_patch::Patch, _> = serde_json::from_value(body.clone());
        patch
            .map_err(|e| e.to_string())
            .and_then(|p| json_patch::patch(&mut doc, &p).map_err(|e| e.to_string()))
            .map_err(|e| status(422, "Invalid", &format!("json patch: {e}")))?;
    } else {
        merge_patch(&mut doc, body);
    }
    Ok(doc)
}

fn found_or_404(r: Resource, name: &str, obj: Option<Value>) -> Response<Body> {
    match obj {
        Some(o) => respond(200, &o),
        None => respond(404, &not_found(r, name)),
    }
}

impl ApiServer {
    pub(super) async fn handle(self, req: Request<Incoming>, port: u16) -> Response<Body> {
        let call = Call::read(req).await;
        if matches!(call.path.as_str(), "/healthz" | "/readyz" | "/livez") {
            return Response::builder()
                .status(200)
                .body(Full::new(Bytes::from("ok")).boxed())
                .expect("valid");
        }
        if call.method == Method::GET {
            if let Some(doc) = discovery(&call.path, port) {
                return respond(200, &doc);
            }
        }
        match Target::resolve(&call.path) {
            Ok(target) => self.dispatch(call, target),
            Err(s) => respond(404, &s),
        }
    }

    fn dispatch(&self, call: Call, t: Target) -> Response<Body> {
        let r = t.r;
        let obj_ns = t.obj_ns();
        match (&call.method, t.name.as_deref(), t.sub.as_deref()) {
            (&Method::GET, None, _)
                if call.q.get("watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                self.watch(r, t.scope_ns, call.q)
            }
            (&Method::GET, None, _) => self.list_response(r, t.scope_ns.as_deref(), &call),
            (&Method::GET, Some(n), _) => match self.get(r, &obj_ns, n) {
                Some(o) if r.kind == "PodDisruptionBudget" => {
                    respond(200, &self.with_budget_status(o))
                }
                Some(o) if call.accept.contains("as=Table") => respond(200, &table(r, &[o])),
                other => found_or_404(r, n, other),
            },
            (&Method::POST, None, _) => {
                if r.namespaced {
                    self.ensure_namespace(&obj_ns);
                }
                match self.create(r, &obj_ns, call.body) {
                    Ok(o) => respond(201, &o),
                    Err((c, s)) => respond(c, &s),
                }
            }
            (&Method::POST, Some(n), Some("eviction")) if r.kind == "Pod" => {
                let (code, s) = self.evict(&obj_ns, n, &call.body);
                respond(code, &s)
            }
            (&Method::PUT, Some(n), _) => {
                let replaced = self.update(r, &obj_ns, n, |o| {
                    let meta = o["metadata"].clone();
                    *o = call.body.clone();
                    for k in ["uid", "namespace", "creationTimestamp", "deletionTimestamp"] {
                        if !meta[k].is_null() {
                            o["metadata"][k] = meta[k].clone();
                        }
                    }
                });
                found_or_404(r, n, replaced)
            }
            (&Method::PATCH, Some(n), _) => {
                let Some(current) = self.get(r, &obj_ns, n) else {
                    return respond(404, &not_found(r, n));
                };
                match patched(&current, &call.body, &call.content_type) {
                    Ok(doc) => found_or_404(r, n, self.update(r, &obj_ns, n, |o| *o = doc)),
                    Err(s) => respond(422, &s),
                }
            }
            (&Method::DELETE, Some(n), _) => {
                let grace = call
                    .q
                    .get("gracePeriodSeconds")
                    .and_then(|g| g.parse().ok())
                    .or(call.body["gracePeriodSeconds"].as_i64());
                found_or_404(r, n, self.delete(r, &obj_ns, n, grace))
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

    /// A list (or a `Table` when kubectl asks for one) at the store's current resourceVersion.
    fn list_response(&self, r: Resource, ns: Option<&str>, call: &Call) -> Response<Body> {
        let items = self.list(r, ns, &call.q);
        if call.accept.contains("as=Table") {
            return respond(200, &table(r, &items));
        }
        let rv = self.state.lock().expect("state").rv;
        respond(
            200,
            &json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_a_resource_its_scope_and_an_object() {
        let t = Target::resolve("/api/v1/namespaces/default/pods/web-1/eviction").unwrap();
        assert_eq!(t.r.kind, "Pod");
        assert_eq!(t.scope_ns.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web-1"));
        assert_eq!(t.sub.as_deref(), Some("eviction"));
        // A cluster-scoped resource has no namespace even when the path names one.
        let t = Target::resolve("/api/v1/namespaces/default/nodes/cp-1").unwrap();
        assert_eq!(
            (t.r.kind, t.obj_ns(), t.scope_ns),
            ("Node", String::new(), None)
        );
        let t = Target::resolve("/apis/policy/v1/poddisruptionbudgets").unwrap();
        assert_eq!((t.r.kind, t.name), ("PodDisruptionBudget", None));
    }

    #[test]
    fn unknown_paths_and_resources_are_404_statuses() {
        let s = Target::resolve("/apis/batch/v1/jobs").unwrap_err();
        assert_eq!(s["code"], 404);
        assert_eq!(
            s["message"],
            "the server doesn't have a resource type \"jobs\""
        );
        let s = Target::resolve("/metrics").unwrap_err();
        assert_eq!(
            s["message"],
            "the server could not find the requested resource (/metrics)"
        );
    }

    #[test]
    fn a_json_patch_that_does_not_apply_is_a_422_status() {
        let doc = json!({"metadata": {"name": "n"}});
        let bad = json!([{"op": "remove", "path": "/spec/missing"}]);
        let s = patched(&doc, &bad, "application/json-patch+json").unwrap_err();
        assert_eq!(
            (s["code"].clone(), s["reason"].clone()),
            (json!(422), json!("Invalid"))
        );
        let merged = patched(
            &doc,
            &json!({"spec": {"x": 1}}),
            "application/merge-patch+json",
        );
        assert_eq!(merged.unwrap()["spec"]["x"], 1);
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
