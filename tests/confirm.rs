//! `confirm: true`: a phase that asks the operator before it runs. Refused without a terminal
//! (exit 3, the phase unstarted, nothing of it ran), answered by `--yes`, asked and answered on
//! a real terminal inside tmux; dry-runs mark it; the shipped irreversible phases carry it.

mod common;

use std::time::{Duration, Instant};

use common::{history, state_of, Env};

const SECRET: &str = "hunter2-very-secret";

/// A check, then a confirmed phase that uses a secret and leaves a mark when it ran.
const PROC: &str = r#"
name: danger
params:
  password: {secret: true, required: true}
phases:
  - id: before
    run: echo before >> "$WORK/ran"
  - id: wipe
    description: Wipe the disk of the test
    confirm: true
    run: echo wiped {{ password }} > /dev/null; echo wipe >> "$WORK/ran"
  - id: after
    run: echo after >> "$WORK/ran"
"#;

fn env() -> Env {
    let env = Env::new();
    env.procedure("danger", PROC);
    std::fs::write(env.file("pw"), SECRET).unwrap();
    env
}

#[test]
fn without_a_terminal_the_run_stops_before_the_phase_and_yes_answers_it() {
    let env = env();
    let out = env
        .medic(&["start", "danger", "--set-file", "password=pw"])
        .run()
        .code(3)
        .stderr_contains("phase /wipe needs confirmation (`confirm: true`) and there is no terminal to ask on; nothing of it ran")
        .stderr_contains("--yes");
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    assert_eq!(env.read("ran"), "before\n");
    assert_eq!(state_of(&env, "/wipe"), "unstarted");
    assert_eq!(state_of(&env, "/after"), "unstarted");

    // The dry-run marks it.
    env.medic(&["plan", "resume", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("CONFIRM: asks for `yes` before it runs");

    env.medic(&["plan", "resume", "--yes"]).run().code(0);
    assert_eq!(env.read("ran"), "before\nwipe\nafter\n");
    let confirmed: Vec<_> = history(&env)
        .into_iter()
        .filter(|e| e["event"] == "confirmed")
        .collect();
    assert_eq!(confirmed.len(), 1, "{confirmed:#?}");
    assert_eq!(confirmed[0]["phase"], "/wipe");
    assert!(confirmed[0]["detail"].as_str().unwrap().contains("--yes"));
}

#[test]
fn confirm_on_a_group_is_refused_at_load() {
    let env = Env::new();
    env.procedure(
        "g",
        "name: g\nphases:\n  - id: grp\n    confirm: true\n    phases:\n      - id: a\n        run: 'true'\n",
    );
    env.medic(&["start", "g", "--dry-run"])
        .run()
        .code(2)
        .stderr_contains("g.yaml:4:14")
        .stderr_contains("`confirm:` applies to a phase with an action, not a group");
}

#[test]
fn the_shipped_irreversible_phases_ask_for_confirmation() {
    let env = Env::new();
    for (procedure, phase) in [
        ("etcd-remove-member", "remove"),
        ("replace-worker-node", "delete-node"),
        ("replace-worker-node", "join"),
        ("replace-control-plane-node", "delete-node"),
        ("replace-control-plane-node", "join"),
        ("upgrade-kubernetes-node", "packages"),
        ("etcd-restore-snapshot", "data"),
    ] {
        let out = env
            .medic(&["-o", "json", "procedures", "show", procedure])
            .run()
            .code(0);
        let text = out.stdout;
        assert!(text.contains(phase), "{procedure}: {text}");
        let yaml = std::fs::read_to_string(format!(
            "{}/plans/{procedure}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let at = yaml
            .find(&format!("- id: {phase}\n"))
            .unwrap_or_else(|| panic!("{procedure}: no phase {phase}"));
        let next = yaml[at + 5..]
            .find("- id:")
            .map_or(yaml.len(), |n| at + 5 + n);
        assert!(
            yaml[at..next].contains("confirm: true"),
            "{procedure}/{phase} has no confirm: true"
        );
    }
}

#[test]
fn on_a_terminal_medic_shows_the_action_and_asks_for_yes() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let env = env();
    let socket = env.file("tmux.sock");
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let command = format!(
        "cd '{dir}' && env MEDIC_STATE_DIR='{dir}/state' MEDIC_PLANS_DIR='{dir}/plans' WORK='{dir}' NO_COLOR=1 '{medic}' start danger --set-file password=pw; echo $? > '{dir}/code'; sleep 30",
        dir = env.path().display(),
        medic = env!("CARGO_BIN_EXE_medic"),
    );
    assert!(tmux(&[
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-s",
        "run",
        &command
    ])
    .status
    .success());
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "run", "-S", "-100"]).stdout)
            .into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screen().contains("type `yes` to run it") {
        assert!(Instant::now() < deadline, "no prompt:\n{}", screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = screen();
    assert!(
        shown.contains("confirm: phase /wipe (Wipe the disk of the test)"),
        "{shown}"
    );
    assert!(shown.contains("'<secret:password>'"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    // Nothing of the phase ran while it asks.
    assert_eq!(env.read("ran"), "before\n");
    assert_eq!(state_of(&env, "/wipe"), "unstarted");
    tmux(&["send-keys", "-t", "run", "yes", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.read("code").is_empty() {
        assert!(Instant::now() < deadline, "run did not end:\n{}", screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tmux(&["kill-server"]);
    assert_eq!(env.read("code").trim(), "0");
    assert_eq!(env.read("ran"), "before\nwipe\nafter\n");
    let confirmed = history(&env)
        .into_iter()
        .find(|e| e["event"] == "confirmed")
        .expect("confirmed in history");
    assert!(confirmed["detail"]
        .as_str()
        .unwrap()
        .contains("typed yes on a terminal"));
}
