//! Waiting on the cluster, kube-runtime style: the conditions are pure predicates over what
//! the API returned, apart from one generic loop ([`await_condition`]) that polls, checks the
//! predicate and gives up at a deadline.
//!
//! 1. A condition is `Fn(&T) -> bool` over one poll's answer (`Option<Node>`: `None` when the
//!    object does not exist).
//! 2. `await_condition` polls until the condition holds or the deadline passes, and returns the
//!    last answer either way, so the caller words the success or the timeout.
//! 3. Cancellation interrupts the pause between polls.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};

use super::super::{sleep_unless_cancelled, ActionError, Cancel};

/// How one wait ended: with the answer that met the condition, or the last one seen.
pub(crate) enum Polled<T> {
    Met(T),
    TimedOut(T),
}

/// Polls `poll` every `interval` until `condition` holds for its answer, or `deadline` passes.
pub(crate) async fn await_condition<T, F, Fut>(
    cancel: &Cancel,
    deadline: Instant,
    interval: Duration,
    mut poll: F,
    condition: impl Fn(&T) -> bool,
) -> Result<Polled<T>, ActionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ActionError>>,
{
    loop {
        let answer = poll().await?;
        if condition(&answer) {
            return Ok(Polled::Met(answer));
        }
        if Instant::now() >= deadline {
            return Ok(Polled::TimedOut(answer));
        }
        sleep_unless_cancelled(cancel, interval).await?;
    }
}

/// The node reports the condition `Ready` as `True`.
pub(crate) fn is_ready(node: &K8sNode) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The kubelet version the node reports, if any.
pub(crate) fn kubelet_version(node: &K8sNode) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.as_str())
}

/// The node exists, is Ready and (when `version` is given) runs that kubelet version.
pub(crate) fn is_ready_with(version: Option<&str>) -> impl Fn(&Option<K8sNode>) -> bool + '_ {
    move |node| {
        node.as_ref()
            .is_some_and(|n| is_ready(n) && (version.is_none() || kubelet_version(n) == version))
    }
}

/// The node no longer exists.
pub(crate) fn is_gone(node: &Option<K8sNode>) -> bool {
    node.is_none()
}

/// The pod with this `uid` is gone: no pod by its name, or one with another uid (a replacement).
pub(crate) fn is_pod_deleted(uid: &str) -> impl Fn(&Option<Pod>) -> bool + '_ {
    move |pod| {
        pod.as_ref()
            .is_none_or(|p| p.metadata.uid.as_deref() != Some(uid))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, NodeSystemInfo};

    use super::*;

    fn node(ready: Option<&str>, version: Option<&str>) -> K8sNode {
        K8sNode {
            status: Some(NodeStatus {
                conditions: ready.map(|status| {
                    vec![
                        NodeCondition {
                            type_: "MemoryPressure".into(),
                            status: "False".into(),
                            ..Default::default()
                        },
                        NodeCondition {
                            type_: "Ready".into(),
                            status: status.into(),
                            ..Default::default()
                        },
                    ]
                }),
                node_info: version.map(|v| NodeSystemInfo {
                    kubelet_version: v.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_needs_the_ready_condition_true() {
        assert!(is_ready(&node(Some("True"), None)));
        assert!(!is_ready(&node(Some("False"), None)));
        assert!(!is_ready(&node(Some("Unknown"), None)));
        assert!(!is_ready(&node(None, None)));
        assert!(!is_ready(&K8sNode::default()));
    }

    #[test]
    fn ready_with_a_version_needs_that_kubelet() {
        let any = is_ready_with(None);
        assert!(any(&Some(node(Some("True"), Some("v1.31.2")))));
        assert!(any(&Some(node(Some("True"), None))));
        assert!(!any(&None));
        let wanted = is_ready_with(Some("v1.31.2"));
        assert!(wanted(&Some(node(Some("True"), Some("v1.31.2")))));
        assert!(!wanted(&Some(node(Some("True"), Some("v1.30.9")))));
        assert!(!wanted(&Some(node(Some("True"), None))));
        assert!(!wanted(&Some(node(Some("False"), Some("v1.31.2")))));
        assert!(!wanted(&None));
    }

    #[test]
    fn gone_means_no_object() {
        assert!(is_gone(&None));
        assert!(!is_gone(&Some(node(Some("True"), None))));
    }

    #[test]
    fn a_pod_is_deleted_when_missing_or_replaced() {
        let pod = |uid: &str| {
            let mut p = Pod::default();
            p.metadata.uid = Some(uid.into());
            p
        };
        let deleted = is_pod_deleted("u-1");
        assert!(deleted(&None));
        assert!(deleted(&Some(pod("u-2"))), "a replacement has another uid");
        assert!(!deleted(&Some(pod("u-1"))));
    }

    #[tokio::test]
    async fn the_loop_returns_the_last_answer_at_the_deadline() {
        let (_tx, cancel) = tokio::sync::watch::channel(None);
        let mut polls = 0;
        let outcome = await_condition(
            &cancel,
            Instant::now() + Duration::from_millis(30),
            Duration::from_millis(5),
            || {
                polls += 1;
                let n = polls;
                async move { Ok(n) }
            },
            |n: &i32| *n >= 1000,
        )
        .await
        .unwrap();
        assert!(matches!(outcome, Polled::TimedOut(n) if n >= 2));
        let met = await_condition(
            &cancel,
            Instant::now() + Duration::from_secs(5),
            Duration::from_millis(1),
            || async { Ok(7) },
            |n: &i32| *n == 7,
        )
        .await
        .unwrap();
        assert!(matches!(met, Polled::Met(7)));
    }
}
