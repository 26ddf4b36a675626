//! Secrets stay secret on every channel: output, phase logs, history, exports, check messages,
//! captured values derived from them, multi-line values, and the command lines (and
//! environments) of every process, local and on a node (a real sshd).

mod common;

use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::Env;

/// Every command that shows an operation, run after the operation ran.
fn every_view(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        vec!["plan"],
        vec!["plan", "-o", "json"],
        vec!["plan", "logs"],
        vec!["plan", "logs", "-o", "json"],
        vec!["plan", "history"],
        vec!["plan", "history", "-o", "json"],
        vec!["plan", "export"],
        vec!["plan", "export", "--format", "json"],
        vec!["plan", "export", "--format", "dot"],
        vec!["operations", "-o", "json"],
    ] {
        let o = env.medic(&args).run();
        out.push(format!(
            "$ medic {}\n{}{}",
            args.join(" "),
            o.stdout,
            o.stderr
        ));
    }
    out
}

fn assert_hidden(texts: &[String], secrets: &[&str]) {
    for text in texts {
        for s in secrets {
            assert!(!text.contains(s), "`{s}` leaked in:\n{text}");
        }
    }
}

#[test]
fn values_captured_from_secret_bearing_phases_are_secret_too() {
    let env = Env::new();
    let token = "tok-7d1e5a90c3b2";
    let reversed: String = token.chars().rev().collect();
    std::fs::write(env.file("token"), token).unwrap();
    std::fs::write(env.file("note"), format!("the token is {token}\n")).unwrap();
    env.procedure(
        "p",
        r#"name: p
params:
  token: {secret: true, required: true}
  note_file: {required: true}
phases:
  - id: echo
    run: echo prefix-{{ token }}-suffix
    capture: {line: "stdout | trim"}
  - id: derived
    run: printf %s {{ token }} | rev
    capture: {reversed: "stdout | trim"}
  - id: via-output
    run: cat {{ note_file }}
    capture: {note: "stdout | trim"}
  - id: plain
    run: echo plain-value-1
    capture: {plain: "stdout | trim"}
  - id: show
    run: echo got {{ line }} {{ reversed }} {{ note }} {{ plain }}
  - id: check
    check: {that: "{{ reversed | length > 100 }}", message: "reversed was {{ reversed }}"}
"#,
    );
    let note = format!("note_file={}", env.file("note").display());
    let start = ["start", "p", "--set-file", "token=token", "--set", &note];
    let dry = env.medic(&start).arg("--dry-run").run().code(0);
    let run = env.medic(&start).run().code(1);
    // The later phase ran with the real values (the check saw the reversed token) ...
    let run = run.stdout_contains("reversed was <secret:reversed>");
    // (The live output of the phase that derives a value shows it: it is known to be secret
    // only once captured. Every later line, and everything stored, hides it.)
    let live_after_capture = run.stdout[run.stdout.find("/via-output").unwrap_or(0)..].to_string();
    let logs = env.medic(&["plan", "logs"]).run().code(0);
    // ... and everything shows placeholders, while a capture from a phase without secrets is shown.
    let logs = logs
        .stdout_contains("got <secret:line> <secret:reversed> <secret:note> plain-value-1")
        .stdout;
    let mut texts = every_view(&env);
    texts.push(dry.stdout + &dry.stderr);
    texts.push(live_after_capture);
    texts.push(logs);
    assert_hidden(&texts, &[token, &reversed]);
    let export = env.medic(&["plan", "export"]).run().code(0).stdout;
    assert!(export.contains("plain-value-1"), "{export}");
}

#[test]
fn each_line_of_a_multi_line_secret_is_hidden() {
    let env = Env::new();
    let secret = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----";
    std::fs::write(env.file("key"), secret).unwrap();
    env.procedure(
        "p",
        "name: p\nparams:\n  key: {secret: true, required: true}\nphases:\n  - id: show\n    run: printf '%s\\n' {{ key }}; printf '%s\\n' {{ key }} >&2\n  - id: fail\n    run: printf '%s\\n' {{ key }} | tail -n 2 >&2; exit 4\n",
    );
    let run = env
        .medic(&["start", "p", "--set-file", "key=key"])
        .run()
        .code(1);
    let mut texts = every_view(&env);
    texts.push(run.stdout + &run.stderr);
    let lines: Vec<&str> = secret.lines().collect();
    assert_hidden(&texts, &lines);
    let logs = env.medic(&["plan", "logs"]).run().stdout;
    assert!(logs.contains("<secret:key>"), "{logs}");
}

#[test]
fn a_command_that_cannot_start_is_not_shown_with_its_secret() {
    // A quote makes the shell-quoted value differ from the value, so redacting the rendered
    // command cannot find it: the error must not name the command at all.
    let env = Env::new();
    let token = "Ab'cd\"ef\\gh-SECRETTAIL";
    std::fs::write(env.file("token"), token).unwrap();
    env.procedure(
        "p",
        "name: p\nparams:\n  token: {secret: true, required: true}\nphases:\n  - id: a\n    run: echo {{ token }}\n",
    );
    let run = env
        .medic(&["start", "p", "--set-file", "token=token"])
        .env("PATH", "/nonexistent")
        .run()
        .code(1);
    let shown = run.stdout + &run.stderr;
    assert!(shown.contains("start the command through `sh`"), "{shown}");
    let mut texts = every_view(&env);
    texts.push(shown);
    assert_hidden(&texts, &["SECRETTAIL", "Ab'cd"]);
}

#[test]
fn secrets_shorter_than_six_characters_are_refused() {
    let env = Env::new();
    env.procedure(
        "p",
        "name: p\nparams:\n  token: {secret: true, required: true}\nphases:\n  - id: a\n    run: echo {{ token }}\n",
    );
    for short in ["e", "abcde"] {
        env.medic(&["start", "p", "--set", &format!("token={short}")])
            .run()
            .code(2)
            .stderr_contains("secret parameter `token` is")
            .stderr_contains("at least 6");
    }
    env.medic(&["start", "p", "--set", "token=abcdef"])
        .run()
        .code(0)
        .stdout_contains("<secret:token>");
}

/// Reads every process's command line and environment until `stop`, returning what held `needle`
/// and how many processes had `witness` in their command line (proof the scan saw the phase).
fn scan_processes(needle: &str, witness: &str, until: Instant) -> (Vec<String>, usize) {
    let mut leaks = Vec::new();
    let mut seen = 0;
    while Instant::now() < until {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.chars().all(|c| c.is_ascii_digit()) || pid == std::process::id().to_string() {
                continue;
            }
            for file in ["cmdline", "environ"] {
                let Ok(bytes) = std::fs::read(entry.path().join(file)) else {
                    continue;
                };
                let mut text = String::from_utf8_lossy(&bytes).replace('\0', " ");
                if file == "environ" {
                    // The procedure asks for the token in TOKEN (`env:`); a process's own
                    // environment is readable by its owner alone.
                    text = text.replace(&format!("TOKEN={needle}"), "TOKEN=...");
                }
                if text.contains(needle) {
                    leaks.push(format!("/proc/{pid}/{file}: {text}"));
                }
                if file == "cmdline" && text.contains(witness) {
                    seen += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    (leaks, seen)
}

#[test]
fn no_process_shows_a_secret_on_its_command_line_or_environment_locally_or_on_a_node() {
    let sshd = Sshd::start(1);
    let env = Env::new();
    sshd.write_worker_inventory(env.path());
    let token = "tok-c0ffee-91b4d2e8";
    std::fs::write(env.file("token"), token).unwrap();
    env.procedure(
        "p",
        r#"name: p
params:
  token: {secret: true, required: true}
phases:
  - id: local
    run:
      command: sleep 2.5; echo {{ token }} > /dev/null; printf %s "$TOKEN" > "$WORK/from-env"
      env: {TOKEN: "{{ token }}"}
  - id: remote
    ssh: {on: n1, run: "sleep 2.6; echo {{ token }} > /dev/null", env: {TOKEN: "{{ token }}"}}
"#,
    );
    let mut child = env
        .medic(&["start", "p", "--set-file", "token=token"])
        .spawn_quiet();
    let (leaks_local, seen_local) = scan_processes(
        token,
        "sleep 2.5",
        Instant::now() + Duration::from_millis(2300),
    );
    let (leaks_remote, seen_remote) = scan_processes(
        token,
        "sleep 2.6",
        Instant::now() + Duration::from_millis(3500),
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "medic failed: {status}");
    assert!(seen_local > 0, "the scan never saw the local phase running");
    assert!(
        seen_remote > 0,
        "the scan never saw the remote phase running"
    );
    assert!(leaks_local.is_empty(), "{leaks_local:#?}");
    // `run: {env: ...}` hands the value to the command through its environment.
    assert_eq!(env.read("from-env"), token);
    assert!(leaks_remote.is_empty(), "{leaks_remote:#?}");
}

#[test]
fn a_secret_cut_by_the_line_limit_shows_no_part_of_itself() {
    let env = Env::new();
    let token = "tok-c0ffee-91b4d2e8";
    std::fs::write(env.file("token"), token).unwrap();
    // 65,530 bytes of `x` and the token on one line: the 64 KiB cut falls inside the token.
    env.procedure(
        "p",
        "name: p\nparams:\n  token: {secret: true, required: true}\nphases:\n  - id: a\n    run: head -c 65530 /dev/zero | tr '\\0' x; printf '%s\\n' {{ token }}\n",
    );
    let run = env
        .medic(&["start", "p", "--set-file", "token=token"])
        .run()
        .code(0);
    let mut texts = every_view(&env);
    texts.push(run.stdout + &run.stderr);
    assert_hidden(&texts, &["xtok-", "xt\u{2026}", &token[..6]]);
    let logs = env.medic(&["plan", "logs"]).run().stdout;
    assert!(
        logs.contains("x<secret:token> … [line cut"),
        "{}",
        &logs[logs.len().saturating_sub(300)..]
    );
}

#[test]
fn a_capture_marked_secret_is_hidden_everywhere_from_the_start() {
    // The value comes from no secret: only `secret: true` makes it one. It must not reach the
    // terminal even while its phase runs, nor any stored view; a later phase that echoes it
    // is redacted, and the dry-run shows the placeholder.
    let env = Env::new();
    env.procedure(
        "p",
        r#"name: p
phases:
  - id: make
    run: 'echo "made: gen-$(printf %s 5f3a9c1e | rev)-tok"'
    capture:
      token: {from: "stdout | trim | replace('made: ', '')", secret: true}
      plain: "stdout | length"
  - id: use
    run: echo using {{ token }} now
  - id: check
    check: {that: "{{ token | length == 0 }}", message: "token was {{ token }}, {{ plain }} chars"}
"#,
    );
    let secret = "gen-e1c9a3f5-tok";
    let dry = env.medic(&["start", "p", "--dry-run"]).run().code(0);
    assert!(dry.stdout.contains("<secret:token>"), "{}", dry.stdout);
    let run = env
        .medic(&["start", "p"])
        .run()
        .code(1)
        .stdout_contains("token was <secret:token>,")
        .stdout_contains("using <secret:token> now");
    let mut texts = every_view(&env);
    texts.push(dry.stdout + &dry.stderr);
    let live = run.stdout.clone() + &run.stderr;
    texts.push(live.clone());
    assert_hidden(&texts, &[secret]);
    // The phase's own output is shown, once the value is hidden; the non-secret capture is not.
    let logs = env
        .medic(&["plan", "logs", "--phase", "/make"])
        .run()
        .code(0)
        .stdout;
    assert!(logs.contains("made: <secret:token>"), "{logs}");
    assert!(live.contains("made: <secret:token>"), "{live}");
    let vars = env
        .medic(&["plan", "export", "--format", "json"])
        .run()
        .code(0)
        .stdout;
    assert!(vars.contains("\"plain\""), "{vars}");
}

#[test]
fn the_output_of_a_phase_that_fails_before_capturing_a_secret_is_withheld() {
    let env = Env::new();
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: make\n    run: printf '%s\\n' 2c18-eulav-edam-flah | rev; exit 3\n    capture:\n      token: {from: stdout, secret: true}\n",
    );
    let run = env.medic(&["start", "p"]).run().code(1);
    let mut texts = every_view(&env);
    texts.push(run.stdout.clone() + &run.stderr);
    assert_hidden(&texts, &["half-made-value-81c2"]);
    let logs = env.medic(&["plan", "logs"]).run().code(0).stdout;
    assert!(logs.contains("output withheld"), "{logs}");
}

#[test]
fn a_malformed_secret_capture_is_refused_with_its_position() {
    let env = Env::new();
    for (body, message) in [
        ("{secret: true}", "needs `from:`"),
        ("{from: stdout, secret: maybe}", "capture secret"),
        ("{from: stdout, secrett: true}", "did you mean `secret`?"),
    ] {
        env.procedure(
            "p",
            &format!(
                "name: p\nphases:\n  - id: a\n    run: echo x\n    capture:\n      t: {body}\n"
            ),
        );
        env.medic(&["start", "p", "--dry-run"])
            .run()
            .code(2)
            .stderr_contains("p.yaml:6:")
            .stderr_contains(message);
    }
}

#[test]
fn a_captured_secret_too_short_to_hide_fails_its_phase() {
    let env = Env::new();
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: make\n    run: printf '%s\\n' xyz | rev\n    capture:\n      token: {from: stdout | trim, secret: true}\n",
    );
    let run = env
        .medic(&["start", "p"])
        .run()
        .code(1)
        .stdout_contains("a secret needs at least 6");
    let mut texts = every_view(&env);
    texts.push(run.stdout + &run.stderr);
    assert_hidden(&texts, &["zyx"]);
}
