//! The `ssh` action against a real sshd: fan-out, per-node results, capture, unreachable nodes,
//! host key checking, quoting, secrets, and SIGKILL then resume.

mod common;

use std::time::{Duration, Instant};

use common::sshd::{free_port, Sshd};
use common::{kill9, state_of, Env};

fn roles(i: usize) -> &'static str {
    match i {
        0 => "control-plane, etcd",
        _ => "worker",
    }
}

fn setup(nodes: usize, procedure: &str) -> (Env, Sshd) {
    let sshd = Sshd::start(nodes);
    let env = Env::new();
    std::fs::write(env.file("cluster.yaml"), sshd.inventory(roles, "", "")).unwrap();
    env.procedure("p", procedure);
    (env, sshd)
}

#[test]
fn one_node_a_role_and_a_list_with_per_node_results_and_capture() {
    let (env, _sshd) = setup(
        3,
        r#"
name: p
params:
  target: {default: n1}
phases:
  - id: one
    ssh: {on: "{{ target }}", run: "echo hello from $(hostname -I 2>/dev/null | cut -d' ' -f1) $SSH_CONNECTION"}
  - id: workers
    ssh: {on: {role: worker}, run: "echo worker; echo warn >&2"}
  - id: list
    ssh: {on: [n3, n1], run: "echo '{\"id\": 42}'"}
  - id: member
    ssh:
      on: n2
      run: "printf '{\"member\": {\"id\": \"%s\"}}' abc123"
    capture: {member_id: json.member.id}
  - id: use
    ssh: {on: n1, run: "echo using {{ member_id }}", env: {GREETING: "hi there"}}
"#,
    );
    let out = env.medic(&["start", "p", "-o", "json"]).run().code(0);
    let events = out.json()["events"].clone();
    let finished: Vec<&serde_json::Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "phase_finished")
        .collect();
    assert_eq!(finished.len(), 5);
    assert_eq!(finished[1]["summary"], "2 nodes ok");
    let logs = env
        .medic(&["plan", "logs", "--phase=/workers"])
        .run()
        .code(0)
        .stdout;
    assert!(
        logs.contains("[n2] worker") && logs.contains("[n3] worker"),
        "{logs}"
    );
    assert!(logs.contains("[err] [n2] warn"), "{logs}");
    assert!(!logs.contains("[n1]"), "n1 is not a worker: {logs}");
    let one = env
        .medic(&["plan", "logs", "--phase=/one"])
        .run()
        .code(0)
        .stdout;
    assert!(one.contains("[n1] hello from"), "{one}");
    assert!(one.contains("127.0.0.2"), "ran on n1's address: {one}");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("role=worker (2 nodes ok)");
    let use_logs = env
        .medic(&["plan", "logs", "--phase=/use"])
        .run()
        .code(0)
        .stdout;
    assert!(
        use_logs.contains("[n1] using abc123"),
        "captured value used: {use_logs}"
    );
}

#[test]
fn a_failing_node_fails_the_phase_and_is_named_with_its_exit_code_and_stderr() {
    let (env, _sshd) = setup(
        3,
        r#"
name: p
phases:
  - id: fan
    ssh: {on: {role: worker}, run: "if [ \"$(echo $SSH_CONNECTION | cut -d' ' -f3)\" = 127.0.0.4 ]; then echo disk full >&2; exit 7; fi; echo ok"}
"#,
    );
    let out = env.medic(&["start", "p"]).run().code(1);
    assert!(
        out.stdout
            .contains("1 of 2 nodes failed: n3 exited with code 7: disk full"),
        "{}",
        out.stdout
    );
    let json = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    assert_eq!(json["phases"][0]["state"], "failed");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("role=worker (1 of 2 nodes failed)");
}

#[test]
fn an_unreachable_node_fails_within_the_connect_timeout_and_is_named() {
    let sshd = Sshd::start(1);
    let env = Env::new();
    let dead_port = free_port();
    let inventory = sshd.inventory(
        roles,
        &format!("  - {{name: dead, address: 127.0.0.9, roles: [worker], ssh: {{port: {dead_port}, connect_timeout: 2s}}}}\n"),
        "",
    );
    std::fs::write(env.file("cluster.yaml"), inventory).unwrap();
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: all\n    ssh: {on: [n1, dead], run: \"echo up\"}\n",
    );
    let started = Instant::now();
    let out = env.medic(&["start", "p"]).run().code(1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.stdout
            .contains("1 of 2 nodes failed: connect to node dead ("),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Connection refused"), "{}", out.stdout);
}

#[test]
fn host_keys_are_checked_strictly_unless_the_inventory_says_accept_new() {
    let sshd = Sshd::start(1);
    let env = Env::new();
    env.procedure("p", "name: p\nphases:\n  - id: a\n    idempotent: true\n    ssh: {on: n1, run: \"echo reached\"}\n");
    // A different key recorded for the host: refused, and the message says the key changed.
    let other = env.file("other_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let other_pub = std::fs::read_to_string(env.file("other_key.pub")).unwrap();
    let wrong = env.file("wrong_known_hosts");
    let fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        &wrong,
        format!(
            "[{}]:{} {}\n",
            sshd.addresses[0],
            sshd.port,
            fields.join(" ")
        ),
    )
    .unwrap();
    let inv = sshd.inventory(roles, "", "").replace(
        &sshd.known_hosts.display().to_string(),
        &wrong.display().to_string(),
    );
    std::fs::write(env.file("cluster.yaml"), &inv).unwrap();
    let out = env.medic(&["start", "p"]).run().code(1);
    assert!(out.stdout.contains("has CHANGED"), "{}", out.stdout);
    assert!(!out.stdout.contains("[n1] reached"));
    env.medic(&["plan", "complete"]).run().code(0);

    // An unknown host with strict checking: refused, naming what to do.
    let empty = env.file("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let inv = sshd.inventory(roles, "", "").replace(
        &sshd.known_hosts.display().to_string(),
        &empty.display().to_string(),
    );
    std::fs::write(env.file("cluster.yaml"), &inv).unwrap();
    let out = env.medic(&["start", "p"]).run().code(1);
    assert!(
        out.stdout.contains("is not in") && out.stdout.contains("accept-new"),
        "{}",
        out.stdout
    );
    env.medic(&["plan", "complete"]).run().code(0);

    // The inventory opts in to accept-new: the host is trusted on first contact and recorded.
    let inv = sshd
        .inventory(roles, "", "  host_key_checking: accept-new\n")
        .replace(
            &sshd.known_hosts.display().to_string(),
            &empty.display().to_string(),
        );
    std::fs::write(env.file("cluster.yaml"), &inv).unwrap();
    let out = env.medic(&["start", "p"]).run().code(0);
    assert!(out.stdout.contains("[n1] reached"), "{}", out.stdout);
    // (Debian's ssh hashes the host names it records, so only the key is visible.)
    let recorded = std::fs::read_to_string(&empty).unwrap();
    let host_pub = std::fs::read_to_string(sshd.dir.path().join("host_key.pub")).unwrap();
    assert!(
        recorded.contains(host_pub.split_whitespace().nth(1).unwrap()),
        "{recorded}"
    );
    env.medic(&["plan", "complete"]).run().code(0);

    // Turning checking off is refused at load.
    let inv = sshd.inventory(roles, "", "  host_key_checking: no\n");
    std::fs::write(env.file("cluster.yaml"), &inv).unwrap();
    env.medic(&["start", "p"])
        .run()
        .code(2)
        .stderr_contains("cannot be turned off");
}

#[test]
fn a_parameter_with_shell_syntax_is_one_quoted_word_and_never_runs() {
    let (env, _sshd) = setup(1, "name: p\nparams:\n  p: {required: true}\nphases:\n  - id: a\n    ssh: {on: n1, run: \"echo {{ p }}\", sudo: false}\n");
    let marker = format!("/tmp/pwned-{}", std::process::id());
    let payload = format!("x; touch {marker}");
    let dry = env
        .medic(&["start", "p", "--set", &format!("p={payload}"), "--dry-run"])
        .run()
        .code(0);
    // The dry-run shows the exact remote command line and who runs it.
    assert!(
        dry.stdout.contains(&format!(
            "ssh n1 ({}@127.0.0.2:",
            std::env::var("USER").unwrap_or("root".into())
        )),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!("'x; touch {marker}'")),
        "{}",
        dry.stdout
    );
    let out = env
        .medic(&["start", "p", "--set", &format!("p={payload}")])
        .run()
        .code(0);
    assert!(
        out.stdout.contains(&format!("[n1] {payload}")),
        "{}",
        out.stdout
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the parameter ran as a command"
    );
}

#[test]
fn a_secret_never_appears_in_plan_logs_history_export_or_output() {
    let (env, _sshd) = setup(
        1,
        "name: p\nparams:\n  token: {secret: true, required: true}\nphases:\n  - id: join\n    ssh: {on: n1, run: \"echo joining with {{ token }}; echo {{ token }} >&2\", env: {TOKEN: \"{{ token }}\"}}\n",
    );
    let secret = "tok-5f2b9c81d0e4";
    let mut outputs = vec![
        env.medic(&[
            "start",
            "p",
            "--set",
            &format!("token={secret}"),
            "--dry-run",
        ])
        .run()
        .code(0),
        env.medic(&["start", "p", "--set", &format!("token={secret}")])
            .run()
            .code(0),
    ];
    for args in [
        vec!["plan"],
        vec!["plan", "-o", "json"],
        vec!["plan", "logs"],
        vec!["plan", "history", "-o", "json"],
        vec!["plan", "export"],
        vec!["plan", "export", "--format", "json"],
    ] {
        outputs.push(env.medic(&args).run().code(0));
    }
    for o in &outputs {
        assert!(
            !o.stdout.contains(secret) && !o.stderr.contains(secret),
            "leaked: {o:?}"
        );
    }
    let logs = env.medic(&["plan", "logs"]).run().code(0).stdout;
    assert!(logs.contains("[n1] joining with <secret:token>"), "{logs}");
}

#[test]
fn sigkill_during_an_ssh_phase_then_resume_completes_and_leaves_no_master() {
    let (env, sshd) = setup(
        2,
        r#"
name: p
phases:
  - id: slow
    idempotent: true
    ssh: {on: [n1, n2], run: "echo started; sleep 30"}
    timeout: 60s
  - id: after
    ssh: {on: n2, run: "echo after"}
"#,
    );
    // Masters that outlive medic (ssh.persist) are tests/ssh_persist.rs's; these must not.
    std::fs::write(
        env.file("cluster.yaml"),
        sshd.inventory(roles, "", "  persist: 0\n"),
    )
    .unwrap();
    // Resume must not wait 30s for the killed run: the rerun uses a marker to finish fast.
    env.procedure(
        "p",
        &format!(
            r#"
name: p
phases:
  - id: slow
    idempotent: true
    ssh: {{on: [n1, n2], run: "echo started; if [ -e {dir}/fast ]; then exit 0; fi; sleep 30"}}
  - id: after
    ssh: {{on: n2, run: "echo after"}}
"#,
            dir = env.path().display()
        ),
    );
    env.medic(&["start", "p", "--manual"]).run().code(0);
    let child = env.medic(&["plan", "resume"]).spawn_quiet();
    let started = Instant::now();
    while !env
        .medic(&["plan", "logs"])
        .run()
        .code(0)
        .stdout
        .contains("[n2] started")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "ssh phase never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill9(child.id());
    let _ = child.wait_with_output();
    assert_eq!(state_of(&env, "/slow"), "interrupted");
    std::fs::write(env.file("fast"), "").unwrap();
    env.medic(&["plan", "resume"]).run().code(0);
    assert_eq!(state_of(&env, "/after"), "completed");
    // The killed executor's masters exit by themselves once idle; the resumed one closed its own.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let masters = ssh_masters(&env);
        if masters.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ssh masters left running: {masters:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `ssh` master processes started by medic for this test's inventory (they carry its key path).
fn ssh_masters(env: &Env) -> Vec<String> {
    let inventory = env.read("cluster.yaml");
    let key = inventory
        .lines()
        .find_map(|l| l.trim().strip_prefix("identity_file: "))
        .unwrap()
        .to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ssh ") && c.contains(" -M ") && c.contains(&key))
        .collect()
}

#[test]
fn unknown_nodes_and_broken_inventories_are_input_errors_before_anything_runs() {
    let (env, _sshd) = setup(2, "name: p\nparams:\n  node: {required: true}\nphases:\n  - id: a\n    ssh: {on: \"{{ node }}\", run: \"touch $HOME/should-not-exist\"}\n");
    env.medic(&["start", "p", "--set", "node=n9"])
        .run()
        .code(2)
        .stderr_contains("phase /a: node `n9` is not in the inventory")
        .stderr_contains("did you mean `n1`?");
    env.medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .stdout_contains("\"operations\": []");
    // No inventory at all.
    std::fs::rename(env.file("cluster.yaml"), env.file("elsewhere.yaml")).unwrap();
    env.medic(&["start", "p", "--set", "node=n1"])
        .run()
        .code(2)
        .stderr_contains("needs an inventory");
    // A broken one: every problem with its line.
    std::fs::write(
        env.file("cluster.yaml"),
        "name: c\nnodes:\n  - {name: n1, address: 127.0.0.2}\n  - {name: n1, address: 127.0.0.3}\nssh: {identity_file: /nonexistent/key}\n",
    )
    .unwrap();
    env.medic(&["start", "p", "--set", "node=n1"])
        .run()
        .code(2)
        .stderr_contains("cluster.yaml:4:12: duplicate node name `n1` (first at line 3)")
        .stderr_contains("cluster.yaml:5:22: ssh.identity_file /nonexistent/key does not exist");
}
