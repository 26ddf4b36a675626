//! The status the emulator gives a pod created without one, as a kubelet would report it once
//! its containers run: Running, Ready, every container ready, no restarts. A test makes a pod
//! crash-loop with `kubectl patch pod … --subresource=status`.

use serde_json::{json, Value};

/// What a kubelet reports for a pod whose containers all run: Running, Ready, no restarts.
pub(super) fn running_status(spec: &Value) -> Value {
    let containers: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}})
        })
        .collect();
    json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        "containerStatuses": containers,
    })
}
