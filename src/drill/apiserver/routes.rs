//! Routing one request: health, discovery, then `/api/v1/...` and `/apis/GROUP/v1/...` to list,
//! get, create, replace, patch (merge, strategic merge, JSON patch), delete, evict and watch.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};

use super::discovery::discovery;
use super::resources::RESOURCES;
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

impl ApiServer {
    pub(super) async fn handle(self, req: Request<Incoming>, port: u16) -> Response<Body> {
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
            if let Some(doc) = discovery(&path, port) {
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
                    return respond(200, &table(r, &items));
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
                Some(o) if accept.contains("as=Table") => respond(200, &table(r, &[o])),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
