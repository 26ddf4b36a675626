//! The `medic` command set through the real binary: requirements, rollback rules, resume,
//! complete, pauses, captures, retries, timeouts, dry-runs, secrets and operation selection.

mod common;

use common::{phase_states, state_of, Env};

/// Three ordered phases that log their ID (and their undo) to $WORK/log.
const ABC: &str = r#"
name: abc
description: three phases in order
phases:
  - id: a
    description: first
    run: echo a >> "$WORK/log"
    rollback: {run: echo undo-a >> "$WORK/log"}
  - id: b
    run: echo b >> "$WORK/log"
    rollback: {run: echo undo-b >> "$WORK/log"}
  - id: c
    run: echo c >> "$WORK/log"
"#;

fn log_lines(env: &Env) -> Vec<String> {
    env.read("log").lines().map(|s| s.to_string()).collect()
}

#[test]
fn execute_refuses_unmet_requirements_with_exit_3_and_lists_them() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/c"])
        .run()
        .code(3)
        .stderr_contains(
            "phase /c requires /b, which is unstarted; run `medic plan execute --phase=/b` first",
        );
    assert!(log_lines(&env).is_empty(), "nothing may run when refused");
    // Both `--phase=/x` and `--phase /x` work; executing in order is accepted.
    env.medic(&["plan", "execute", "--phase", "/a"])
        .run()
        .code(0);
    env.medic(&["plan", "execute", "--phase=b"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/c"]).run().code(0);
    assert_eq!(log_lines(&env), ["a", "b", "c"]);
    // Executing a completed phase is a no-op that says so.
    env.medic(&["plan", "execute", "--phase=/a"])
        .run()
        .code(0)
        .stdout_contains("already completed");
    assert_eq!(log_lines(&env), ["a", "b", "c"]);
}

#[test]
fn force_overrides_requirements_and_history_records_it() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&[
        "plan",
        "execute",
        "--phase=/c",
        "--force",
        "--reason",
        "cab approved",
    ])
    .run()
    .code(0);
    assert_eq!(log_lines(&env), ["c"]);
    let forced = common::forced_entries(&env);
    assert_eq!(forced.len(), 1, "{:#?}", common::history(&env));
    assert_eq!(forced[0]["phase"], "/c");
    assert!(forced[0]["detail"].as_str().unwrap().contains("/b"));
    assert_eq!(forced[0]["reason"], "cab approved");
}

#[test]
fn rollback_is_refused_while_a_dependent_is_completed() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc"]).run().code(0);
    env.medic(&["plan", "rollback", "--phase=/a"])
        .run()
        .code(3)
        .stderr_contains(
            "cannot roll back /a: phases that depend on it are started and not rolled back:",
        )
        .stderr_contains("/b (completed)")
        .stderr_contains("/c (completed)");
    assert_eq!(log_lines(&env), ["a", "b", "c"]);
    // Undo from the end; /c has no rollback action, so it is a recorded no-op.
    env.medic(&["plan", "rollback", "--phase=/c"])
        .run()
        .code(0)
        .stdout_contains("no rollback action");
    env.medic(&["plan", "rollback", "--phase=/b"]).run().code(0);
    env.medic(&["plan", "rollback", "--phase=/a"]).run().code(0);
    assert_eq!(log_lines(&env), ["a", "b", "c", "undo-b", "undo-a"]);
    assert_eq!(state_of(&env, "/c"), "rolled_back");
    // A rolled-back phase runs again on execute.
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(log_lines(&env)[5..], ["a", "b", "c"]);
}

#[test]
fn group_rollback_goes_in_reverse_order_and_skips_unstarted() {
    let env = Env::new();
    env.procedure(
        "grp",
        r#"
name: grp
phases:
  - id: g
    phases:
      - id: one
        run: echo one >> "$WORK/log"
        rollback: {run: echo undo-one >> "$WORK/log"}
      - id: two
        run: echo two >> "$WORK/log"
        rollback: {run: echo undo-two >> "$WORK/log"}
      - id: three
        run: echo three >> "$WORK/log"; exit 4
        rollback: {run: echo undo-three >> "$WORK/log"}
      - id: four
        run: echo four >> "$WORK/log"
        rollback: {run: echo undo-four >> "$WORK/log"}
"#,
    );
    env.medic(&["start", "grp"])
        .run()
        .code(1)
        .stdout_contains("/g/three failed");
    let dry = env
        .medic(&["plan", "rollback", "--phase=/g", "--dry-run"])
        .run()
        .code(0);
    let order: Vec<&str> = ["/g/three", "/g/two", "/g/one"].into_iter().collect();
    let positions: Vec<usize> = order.iter().map(|p| dry.stdout.find(p).expect(p)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", dry.stdout);
    assert!(!dry.stdout.contains("/g/four"));
    assert_eq!(
        log_lines(&env),
        ["one", "two", "three"],
        "dry-run changed nothing"
    );
    env.medic(&["plan", "rollback", "--phase=/g"]).run().code(0);
    assert_eq!(log_lines(&env)[3..], ["undo-three", "undo-two", "undo-one"]);
    let states = phase_states(&env);
    assert_eq!(
        states,
        [
            ("/g/one".to_string(), "rolled_back".to_string()),
            ("/g/two".into(), "rolled_back".into()),
            ("/g/three".into(), "rolled_back".into()),
            ("/g/four".into(), "unstarted".into()),
        ]
    );
}

#[test]
fn resume_skips_completed_phases_and_complete_closes_the_operation() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/a"]).run().code(0);
    env.medic(&["plan", "resume"])
        .run()
        .code(0)
        .stdout_contains("every phase completed");
    assert_eq!(log_lines(&env), ["a", "b", "c"]);
    env.medic(&["plan", "complete"])
        .run()
        .code(0)
        .stdout_contains("completed");
    let ops = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    assert_eq!(ops["operations"][0]["state"], "completed");
    // A closed operation runs nothing more.
    env.medic(&[
        "plan",
        "resume",
        "--operation",
        ops["operations"][0]["id"].as_str().unwrap(),
    ])
    .run()
    .code(3)
    .stderr_contains("is completed");
}

#[test]
fn complete_with_unfinished_phases_marks_the_operation_failed() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/a"]).run().code(0);
    env.medic(&["plan", "complete"])
        .run()
        .code(0)
        .stdout_contains("marked failed")
        .stdout_contains("/b (unstarted)");
    let ops = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    assert_eq!(ops["operations"][0]["state"], "failed");
    let history = common::history(&env);
    let last = history.last().unwrap();
    assert_eq!(last["event"], "operation_failed");
}

#[test]
fn resume_stops_at_a_pause_until_the_operator_executes_it() {
    let env = Env::new();
    env.procedure(
        "maint",
        r#"
name: maint
params:
  node: {required: true}
phases:
  - id: before
    run: echo before >> "$WORK/log"
  - id: maintenance
    pause: "Do the maintenance on {{ node }}"
  - id: after
    run: echo after >> "$WORK/log"
"#,
    );
    env.medic(&["start", "maint", "--set", "node=n1"])
        .run()
        .code(0)
        .stdout_contains("paused before /maintenance: Do the maintenance on n1");
    assert_eq!(log_lines(&env), ["before"]);
    env.medic(&["plan", "resume"])
        .run()
        .code(0)
        .stdout_contains("paused");
    assert_eq!(log_lines(&env), ["before"]);
    env.medic(&["plan", "execute", "--phase=/maintenance"])
        .run()
        .code(0);
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(log_lines(&env), ["before", "after"]);
}

#[test]
fn captured_values_survive_into_a_later_process() {
    let env = Env::new();
    env.procedure(
        "cap",
        r#"
name: cap
phases:
  - id: find
    run: |
      echo '{"member": {"id": "8e9e05c52164694d", "name": "cp-2"}}'
    capture:
      member_id: json.member.id
  - id: use
    description: remove member {{ member_id }}
    run: echo removing {{ member_id }} >> "$WORK/log"
  - id: guard
    check: {that: "{{ member_id | length == 16 }}", message: "bad id {{ member_id }}"}
"#,
    );
    env.medic(&["start", "cap", "--manual"]).run().code(0);
    // Before capture, a dry-run shows the value as pending.
    env.medic(&["plan", "resume", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("<member_id: captured at run time>");
    env.medic(&["plan", "execute", "--phase=/find"])
        .run()
        .code(0);
    env.medic(&["plan", "resume", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("removing 8e9e05c52164694d");
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(log_lines(&env), ["removing 8e9e05c52164694d"]);
}

#[test]
fn retries_back_off_then_succeed_and_timeouts_fail_the_phase() {
    let env = Env::new();
    env.procedure(
        "flaky",
        r#"
name: flaky
phases:
  - id: flaky
    retries: 3
    retry_delay: 50ms
    run: echo x >> "$WORK/tries"; test "$(wc -l < "$WORK/tries")" -ge 3
  - id: slow
    timeout: 300ms
    run: sleep 20
"#,
    );
    let out = env.medic(&["start", "flaky"]).run().code(1);
    assert_eq!(
        env.read("tries").lines().count(),
        3,
        "two failures then success"
    );
    assert!(out.stdout.contains("/slow failed after"), "{}", out.stdout);
    assert!(
        out.stdout.contains("timed out after 300ms"),
        "{}",
        out.stdout
    );
    let history = common::history(&env);
    let retries = history.iter().filter(|e| e["event"] == "retry").count();
    assert_eq!(retries, 2);
    assert_eq!(state_of(&env, "/flaky"), "completed");
    assert_eq!(state_of(&env, "/slow"), "failed");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/slow failed: timed out after 300ms");
}

#[test]
fn values_are_shell_quoted_and_never_executed() {
    let env = Env::new();
    env.procedure(
        "quote",
        r#"
name: quote
params:
  node: {required: true}
phases:
  - id: echo
    run: echo {{ node }} > "$WORK/out"
"#,
    );
    let payload = format!("x; touch {}/pwned", env.path().display());
    env.medic(&["start", "quote", "--set", &format!("node={payload}")])
        .run()
        .code(0);
    assert!(
        !env.file("pwned").exists(),
        "the parameter was executed as a command"
    );
    assert_eq!(env.read("out").trim(), payload);
}

#[test]
fn secrets_never_appear_in_any_output() {
    let env = Env::new();
    env.procedure(
        "sec",
        r#"
name: sec
params:
  token: {secret: true, required: true, description: join token}
  node: {default: cp-4}
phases:
  - id: join
    description: join {{ node }} with {{ token }}
    run: echo joining with {{ token }}; echo token={{ token }} >&2
    rollback:
      run: echo leave {{ token }}
  - id: fail
    run: echo bad {{ token }}; exit 3
"#,
    );
    let secret = "s3cr3t-abcdef.0123456789";
    let mut outputs = vec![];
    let start = env
        .medic(&[
            "start",
            "sec",
            "--set",
            &format!("token={secret}"),
            "--reason",
            "test",
        ])
        .run()
        .code(1);
    outputs.push(start);
    outputs.push(
        env.medic(&[
            "start",
            "sec",
            "--set",
            &format!("token={secret}"),
            "--dry-run",
        ])
        .run()
        .code(0),
    );
    outputs.push(
        env.medic(&[
            "start",
            "sec",
            "--set",
            &format!("token={secret}"),
            "--dry-run",
            "-o",
            "json",
        ])
        .run()
        .code(0),
    );
    outputs.push(
        env.medic(&["plan", "execute", "--phase=/fail", "-o", "json"])
            .run()
            .code(1),
    );
    for args in [
        vec!["plan"],
        vec!["plan", "-o", "json"],
        vec!["plan", "logs"],
        vec!["plan", "logs", "-o", "json"],
        vec!["plan", "history"],
        vec!["plan", "history", "-o", "json"],
        vec!["plan", "export", "--format", "markdown"],
        vec!["plan", "export", "--format", "json"],
        vec!["plan", "export", "--format", "dot"],
        vec!["plan", "resume", "--dry-run"],
        vec!["plan", "rollback", "--phase=/", "--dry-run"],
        vec!["operations"],
        vec!["operations", "-o", "json"],
    ] {
        outputs.push(env.medic(&args).run().code(0));
    }
    let logs = env.medic(&["plan", "logs"]).run().code(0);
    assert!(
        logs.stdout.contains("joining with <secret:token>"),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("token=<secret:token>"),
        "{}",
        logs.stdout
    );
    for out in &outputs {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "secret leaked:\n{out:?}"
        );
    }
    let export = env.medic(&["plan", "export"]).run().code(0);
    assert!(
        export.stdout.contains("| token | *(secret, not shown)* |"),
        "{}",
        export.stdout
    );
    // The database that keeps the value for resumes is readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.state_dir().join("medic.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "medic.db is {mode:o}");
    // Bad --set values for a secret must not echo it either.
    let bad = env
        .medic(&[
            "start",
            "sec",
            "--set",
            &format!("token={secret}"),
            "--set",
            "bogus=1",
        ])
        .run()
        .code(2);
    assert!(!bad.stderr.contains(secret), "{bad:?}");
}

#[test]
fn dry_run_shows_rendered_actions_in_order_and_changes_nothing() {
    let env = Env::new();
    env.procedure("abc", ABC);
    let preview = env.medic(&["start", "abc", "--dry-run"]).run().code(0);
    let a = preview.stdout.find("1. /a — first").expect("numbered /a");
    let b = preview.stdout.find("2. /b").expect("/b second");
    let c = preview.stdout.find("3. /c").expect("/c third");
    assert!(a < b && b < c);
    assert!(
        preview
            .stdout
            .contains("run locally: echo a >> \"$WORK/log\""),
        "{}",
        preview.stdout
    );
    assert!(
        preview.stdout.contains("undo: run locally: echo undo-a"),
        "{}",
        preview.stdout
    );
    let ops = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    assert_eq!(
        ops["operations"].as_array().unwrap().len(),
        0,
        "start --dry-run created nothing"
    );
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&["plan", "resume", "--dry-run"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/a", "--dry-run"])
        .run()
        .code(0);
    assert!(log_lines(&env).is_empty());
    assert!(phase_states(&env).iter().all(|(_, s)| s == "unstarted"));
}

#[test]
fn several_active_operations_must_be_chosen_explicitly() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    let out = env
        .medic(&["plan"])
        .run()
        .code(2)
        .stderr_contains("several operations are active; choose one with --operation");
    let ops = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    let first = ops["operations"][0]["id"].as_str().unwrap().to_string();
    assert!(out.stderr.contains(&first));
    env.medic(&["plan", "--operation", &first])
        .run()
        .code(0)
        .stdout_contains(&first);
    env.medic(&["plan", "execute", "--phase=/a", "--operation", &first])
        .run()
        .code(0);
    env.medic(&["plan", "--operation", "nope"])
        .run()
        .code(2)
        .stderr_contains("no operation `nope`");
}

#[test]
fn unknown_phase_is_an_input_error_with_a_suggestion() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/bb"])
        .run()
        .code(2)
        .stderr_contains("no phase /bb")
        .stderr_contains("did you mean /b?");
}

#[test]
fn ctrl_c_stops_the_running_phase_and_records_it_as_interrupted() {
    let env = Env::new();
    env.procedure(
        "long",
        r#"
name: long
phases:
  - id: sleep
    run: echo started >> "$WORK/log"; sleep 30
  - id: after
    run: echo after >> "$WORK/log"
"#,
    );
    env.medic(&["start", "long", "--manual"]).run().code(0);
    let child = env.medic(&["plan", "resume"]).spawn();
    let started = std::time::Instant::now();
    while !env.read("log").contains("started") {
        assert!(started.elapsed().as_secs() < 20, "phase never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "did not stop the running command"
    );
    assert_eq!(state_of(&env, "/sleep"), "failed");
    assert_eq!(state_of(&env, "/after"), "unstarted");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/sleep failed: interrupted");
    assert_eq!(log_lines(&env), ["started"]);
}

#[test]
fn a_damaged_database_is_a_clear_error_not_a_reset() {
    let env = Env::new();
    env.procedure("abc", ABC);
    env.medic(&["start", "abc", "--manual"]).run().code(0);
    let db = env.state_dir().join("medic.db");
    std::fs::remove_dir_all(&db).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    env.medic(&["operations"])
        .run()
        .code(2)
        .stderr_contains("is damaged")
        .no_panic();
    env.medic(&["plan"])
        .run()
        .code(2)
        .stderr_contains("is damaged");
}

#[test]
fn plan_json_and_text_show_state_markers_and_the_first_failure() {
    let env = Env::new();
    env.procedure(
        "f",
        r#"
name: f
phases:
  - id: ok
    description: fine
    run: "true"
  - id: bad
    description: breaks
    run: echo oops >&2; exit 7
"#,
    );
    env.medic(&["start", "f"]).run().code(1);
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("✔ /ok")
        .stdout_contains("✘ /bad")
        .stdout_contains("/bad failed: command exited with code 7: oops");
    let json = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    assert_eq!(
        json["phases"][1]["error"],
        "command exited with code 7: oops"
    );
    assert_eq!(json["progress"]["completed"], 1);
    let logs = env.medic(&["plan", "logs", "--phase=/bad"]).run().code(0);
    assert!(
        logs.stdout.contains("[err] oops") && !logs.stdout.contains("/ok"),
        "{}",
        logs.stdout
    );
    env.medic(&["plan", "--short"])
        .run()
        .code(0)
        .stdout_contains("/bad")
        .stdout_lacks("DESCRIPTION");
    let dot = env
        .medic(&["plan", "export", "--format", "dot"])
        .run()
        .code(0);
    assert!(dot.stdout.contains("\"/ok\" -> \"/bad\""), "{}", dot.stdout);
}

#[test]
fn the_readme_procedure_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Procedures").expect("section")..];
    let start = section.find("```yaml\n").expect("yaml block") + 8;
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    let env = Env::new();
    env.procedure("local-preflight", yaml);
    env.medic(&["procedures", "show", "local-preflight"])
        .run()
        .code(0);
    env.medic(&[
        "start",
        "local-preflight",
        "--dry-run",
        "--set",
        "node=n1",
        "--set",
        "token=abcdef",
    ])
    .run()
    .code(0)
    .stdout_contains("/checks/sh")
    .stdout_contains("check that members | length >= 2")
    .stdout_lacks("abc");
}

#[test]
fn the_built_in_preflight_runs_end_to_end() {
    let env = Env::new();
    let state = env.state_dir();
    env.medic(&[
        "start",
        "local-preflight",
        "--set",
        &format!("state_dir={}", state.display()),
    ])
    .run()
    .code(0)
    .stdout_contains("every phase completed");
    let json = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    assert_eq!(json["progress"]["completed"], json["progress"]["leaves"]);
    env.medic(&["plan", "complete"])
        .run()
        .code(0)
        .stdout_contains("completed");
}

/// A probe captures whether the node is ready; the drain only runs when it is.
const COND: &str = r#"
name: cond
params:
  node: {required: true}
  go: {default: "yes"}
phases:
  - id: probe
    run: "echo '{\"ready\": false}'"
    capture: {node_ready: json.ready}
    idempotent: true
  - id: drain
    when: {that: "{{ node_ready }}", reason: "{{ node }} is not Ready; nothing to drain"}
    run: touch "$WORK/drained"
    rollback: {run: touch "$WORK/undrained"}
  - id: always
    when: "{{ go == 'yes' }}"
    run: touch "$WORK/always"
    rollback: {run: touch "$WORK/undo-always"}
"#;

#[test]
fn when_false_skips_the_action_and_its_rollback() {
    let env = Env::new();
    env.procedure("cond", COND);
    env.medic(&["start", "cond", "--set", "node=n1", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("(only when node_ready; decided at run time")
        .stdout_contains("(only when go == 'yes'; true now");
    env.medic(&["start", "cond", "--set", "node=n1"])
        .run()
        .code(0)
        .stdout_contains("/drain completed in")
        .stdout_contains("skipped: n1 is not Ready; nothing to drain");
    assert!(
        !env.file("drained").exists(),
        "a skipped action must not run"
    );
    assert!(
        env.file("always").exists(),
        "a true condition runs the action"
    );
    assert_eq!(state_of(&env, "/drain"), "completed");
    let json = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    let drain = json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "/drain")
        .unwrap()
        .clone();
    assert_eq!(drain["skipped"], "n1 is not Ready; nothing to drain");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/drain was skipped: n1 is not Ready; nothing to drain")
        .stdout_contains(" skipped ");
    let history = common::history(&env);
    assert!(
        history
            .iter()
            .any(|e| e["event"] == "skip" && e["phase"] == "/drain"),
        "{history:#?}"
    );
    // Rolling back the whole plan undoes /always but not the skipped /drain.
    env.medic(&["plan", "rollback", "--phase=/", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("nothing to undo");
    env.medic(&["plan", "rollback", "--phase=/"])
        .run()
        .code(0)
        .stdout_contains("nothing to undo");
    assert!(env.file("undo-always").exists());
    assert!(
        !env.file("undrained").exists(),
        "the rollback of a skipped phase must not run"
    );
    assert_eq!(state_of(&env, "/drain"), "rolled_back");
}

#[test]
fn when_false_without_a_reason_says_which_condition() {
    let env = Env::new();
    env.procedure("cond", COND);
    env.medic(&["start", "cond", "--set", "node=n1", "--set", "go=no"])
        .run()
        .code(0)
        .stdout_contains("skipped: condition is false: go == 'yes'");
    assert!(!env.file("always").exists());
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/always was skipped: condition is false: go == 'yes'");
}

#[test]
fn shell_words_passes_a_command_parameter_as_separately_quoted_words() {
    let env = Env::new();
    env.procedure(
        "words",
        "name: words\nparams:\n  cmd: {required: true}\nphases:\n  - id: run\n    run: '{{ cmd | shell_words }} > \"$WORK/out\"'\n",
    );
    env.medic(&[
        "start",
        "words",
        "--set",
        "cmd=printf %s| 'b c' x;touch $WORK/pwned",
    ])
    .run()
    .code(0);
    // Several arguments, each quoted: `;` and `$WORK` stay inside their word.
    assert_eq!(env.read("out"), "b c|x;touch|$WORK/pwned|");
    assert!(!env.file("pwned").exists());
    env.medic(&["plan", "complete"]).run().code(0);
    env.medic(&["start", "words", "--set", "cmd=printf 'unbalanced"])
        .run()
        .code(1)
        .stdout_contains("shell_words");
}

const INNER: &str = r#"
name: inner
description: find a member and remove it
params:
  node: {required: true, pattern: '^[a-z0-9-]+$'}
  greeting: {default: hello}
phases:
  - id: find
    run: "printf '{\"id\": \"m-%s\"}' {{ node }}"
    capture: {member: json.id}
    idempotent: true
  - id: remove
    description: remove {{ node }}
    run: echo {{ greeting }} {{ node }} {{ member }} >> "$WORK/log"
"#;

const OUTER: &str = r#"
name: outer
params:
  target: {required: true}
phases:
  - id: first
    run: echo first >> "$WORK/log"
  - id: etcd
    description: take {{ target }} out of etcd
    include: {procedure: inner, with: {node: "{{ target }}"}}
  - id: after
    requires: [/etcd/remove]
    run: echo after {{ member }} >> "$WORK/log"
"#;

#[test]
fn include_renders_the_included_phases_with_bound_parameters() {
    let env = Env::new();
    env.procedure("inner", INNER).procedure("outer", OUTER);
    env.medic(&["start", "outer", "--set", "target=cp-2", "--manual"])
        .run()
        .code(0);
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("take cp-2 out of etcd")
        .stdout_contains("/etcd/find")
        .stdout_contains("remove cp-2");
    env.medic(&["plan", "resume", "--dry-run"])
        .run()
        .code(0)
        .stdout_contains("printf '{\"id\": \"m-%s\"}' cp-2");
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(
        log_lines(&env),
        ["first", "hello cp-2 m-cp-2", "after m-cp-2"]
    );
    let ids: Vec<String> = phase_states(&env).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["/first", "/etcd/find", "/etcd/remove", "/after"]);
    env.medic(&["plan", "complete"]).run().code(0);
    // The included procedure's pattern holds for the bound value.
    env.medic(&["start", "outer", "--set", "target=CP 2", "--manual"])
        .run()
        .code(2)
        .stderr_contains(
            "phase /etcd: parameter `node` of procedure `inner`: `CP 2` does not match the pattern ^[a-z0-9-]+$",
        );
}

#[test]
fn a_plans_dir_procedure_can_include_a_built_in_one() {
    let env = Env::new();
    env.procedure(
        "replace",
        "name: replace\nparams:\n  node: {required: true}\nphases:\n  - id: etcd\n    include: {procedure: etcd-remove-member, with: {node: \"{{ node }}\"}}\n  - id: done\n    requires: [/etcd/etcd/remove]\n    run: echo {{ member_id }}\n",
    );
    env.medic(&["procedures", "show", "replace"])
        .run()
        .code(0)
        .stdout_contains("include etcd-remove-member")
        .stdout_contains("/etcd/checks/health")
        .stdout_contains("/etcd/etcd/remove");
}
