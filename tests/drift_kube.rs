//! Drift facts from the Kubernetes API, against the API emulator: `start` and `approve`
//! record, for the nodes the plan touches, each Node's state, cordon and kubelet version, and
//! for its drain the pods it would evict or that block it. A pod added to the node after the
//! approval, or the node cordoned, refuses the run (exit 3) with the difference named;
//! `plan drift` shows it; approving again lets it run.

mod common;

use common::kube::{seed, ApiServer};
use common::Env;

#[test]
fn a_pod_added_to_the_drained_node_after_approval_refuses_the_run() {
    let api = ApiServer::start(&seed(3, 2, ""));
    let env = Env::new();
    std::fs::write(env.file("cluster.yaml"), api.inventory()).unwrap();
    env.procedure(
        "drain",
        "name: drain\nparams:\n  node: {required: true}\nphases:\n  - id: drain\n    kube:\n      drain: {node: \"{{ node }}\", timeout: 60s, force: true}\n",
    );
    env.medic(&["start", "drain", "--set", "node=n1", "--manual"])
        .run()
        .code(0);
    env.medic(&["plan", "approve", "--reason", "CHG-7"])
        .run()
        .code(0);
    let recorded = env
        .medic(&["-o", "json", "plan", "drift"])
        .run()
        .code(0)
        .json();
    let facts = &recorded["recorded"]["items"];
    assert_eq!(facts["node n1: state"], "Ready", "{facts}");
    assert_eq!(facts["node n1: scheduling"], "schedulable", "{facts}");
    assert!(facts["node n1: kubelet"].as_str().unwrap().starts_with('v'));
    assert!(
        facts
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("drain n1: pod default/web-")),
        "{facts}"
    );

    // After the approval: someone starts a pod on n1 and cordons it.
    std::fs::write(
        env.file("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: default}\nspec: {nodeName: n1, containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap();
    let pod_file = env.file("pod.yaml");
    let created = api.kubectl(&[
        "create",
        "--validate=false",
        "-f",
        pod_file.to_str().unwrap(),
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(api.kubectl(&["cordon", "n1"]).status.success());

    env.medic(&["plan", "drift"])
        .run()
        .code(1)
        .stdout_contains("drain n1: pod default/late is new since approve: evict");
    let out = env.medic(&["plan", "resume"]).run().code(3);
    assert!(
        out.stderr
            .contains("drain n1: pod default/late is new since approve: evict")
            && out
                .stderr
                .contains("node n1: scheduling was schedulable at approve, now cordoned"),
        "{}",
        out.stderr
    );
    assert_eq!(
        api.pods_on("n1").len(),
        facts_pods(facts) + 1,
        "nothing drained"
    );

    // Reviewed again: the facts now include the pod, and the run goes ahead.
    env.medic(&["plan", "approve", "--reason", "CHG-7, late pod seen"])
        .run()
        .code(0);
    env.medic(&["plan", "resume"]).run().code(0);
}

fn facts_pods(facts: &serde_json::Value) -> usize {
    // Every pod on n1 at approval: those to evict or blocked, plus the DaemonSet pod left alone.
    facts
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("drain n1: pod "))
        .count()
        + 1
}
