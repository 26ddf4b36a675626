//! The etcd state backend (`--state etcd://...`) against real etcd members: the core command
//! scenarios give the same exit codes and output as on sled (one scenario, run on both), a
//! teammate takes over from a SIGKILLed executor once its lease expires, two executors racing
//! to resume never both run, secrets never reach etcd in clear, and `medic state migrate`
//! round-trips an operation sled → etcd → sled.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::{kill9, Env, Output, Run};

/// Where a test keeps its state: the sled directory of its `Env`, or a prefix in etcd.
#[derive(Clone)]
enum Backend {
    Sled,
    Etcd { url: String, key_file: PathBuf },
}

impl Backend {
    fn etcd(cluster: &EtcdCluster, prefix: &str, key_dir: &Path) -> Backend {
        let hosts: Vec<String> = (0..cluster.members.len())
            .map(|i| format!("127.0.0.1:{}", cluster.members[i].client_port))
            .collect();
        Backend::Etcd {
            url: format!("etcd://{}/{prefix}", hosts.join(",")),
            key_file: key_dir.join("state.key"),
        }
    }

    fn medic(&self, env: &Env, args: &[&str]) -> Run {
        let run = env.medic(args).env("MEDIC_STATE_LEASE_TTL", "3");
        match self {
            Backend::Sled => run,
            Backend::Etcd { url, key_file } => run
                .env("MEDIC_STATE", url)
                .env("MEDIC_STATE_KEY_FILE", key_file.to_str().unwrap()),
        }
    }
}

/// Three ordered phases logging to $WORK/log, one using a secret parameter.
const ABC: &str = r#"
name: abc
description: three phases in order
params:
  token: {secret: true, required: true}
phases:
  - id: a
    description: first
    run: echo a >> "$WORK/log"
    rollback: {run: echo undo-a >> "$WORK/log"}
  - id: b
    run: test -n {{ token }} && echo b >> "$WORK/log" && echo b-output
    rollback: {run: echo undo-b >> "$WORK/log"}
  - id: c
    run: echo c >> "$WORK/log"
"#;

/// Output with what differs between two runs of the same scenario (IDs, times, pids,
/// durations, the temporary directory, column padding) replaced.
fn normalize(text: &str, env: &Env) -> String {
    let text = text.replace(env.path().to_str().unwrap(), "WORKDIR");
    let rules = [
        (r"\d{8}-\d{6}-[0-9a-f]{4}", "OPID"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "TIME"),
        (r"\d\d:\d\d:\d\d", "HMS"),
        (r"pid \d+", "pid N"),
        (r"\b\d+(\.\d+)?(ms|s|m)\b", "DUR"),
        (r"[ \t]+", " "),
    ];
    let mut out = text;
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}

/// The core scenario: start, refused execute, execute, resume, refused and allowed
/// rollbacks, plan, history, logs, complete, a refused resume of a closed operation.
/// Returns each step's exit code and normalized output.
/// Each step's exit code, normalized stdout and stderr.
type Transcript = Vec<(i32, String, String)>;

fn core_scenario(backend: &Backend) -> (Transcript, Vec<String>, Vec<String>) {
    let env = Env::new();
    env.procedure("abc", ABC);
    let steps: &[&[&str]] = &[
        &["start", "abc", "--manual", "--set", "token=hunter2"],
        &["plan", "execute", "--phase=/b"],
        &["plan", "execute", "--phase=/a"],
        &["plan", "resume"],
        &["plan", "rollback", "--phase=/a"],
        &["plan", "rollback", "--phase=/c"],
        &["plan", "rollback", "--phase=/b"],
        &["plan"],
        &["plan", "resume"],
        &["plan", "logs"],
        &["plan", "history"],
        &["plan", "export", "--format", "markdown"],
        &["plan", "complete"],
        &["plan", "resume"],
        &["operations"],
    ];
    let mut transcript = Vec::new();
    let mut raw = Vec::new();
    for args in steps {
        let out: Output = backend.medic(&env, args).run().no_panic();
        raw.push(format!("{}{}", out.stdout, out.stderr));
        transcript.push((
            out.code,
            normalize(&out.stdout, &env),
            normalize(&out.stderr, &env),
        ));
    }
    let log = env.read("log").lines().map(str::to_string).collect();
    (transcript, log, raw)
}

#[test]
fn core_scenario_gives_the_same_codes_and_output_on_sled_and_etcd() {
    let cluster = EtcdCluster::start(1, false);
    let keys = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "core", keys.path());
    let (sled_steps, sled_log, _) = core_scenario(&Backend::Sled);
    let (etcd_steps, etcd_log, etcd_raw) = core_scenario(&etcd);
    let codes: Vec<i32> = etcd_steps.iter().map(|s| s.0).collect();
    assert_eq!(codes, [0, 3, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
    assert_eq!(
        etcd_log,
        ["a", "b", "c", "undo-b", "b", "c"],
        "phases ran as on sled"
    );
    assert_eq!(sled_log, etcd_log);
    for (i, (s, e)) in sled_steps.iter().zip(&etcd_steps).enumerate() {
        assert_eq!(s, e, "step {i} differs between sled and etcd");
    }
    assert!(etcd_raw[9].contains("b-output"), "logs come back from etcd");
    for out in &etcd_raw {
        assert!(!out.contains("hunter2"), "a secret leaked: {out}");
    }
    // Nothing in etcd holds the secret in clear; the key file is the operator's, 0600.
    let dump = cluster.etcdctl(&["get", "--prefix", "/core/"]);
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("/core/secret/"), "secret values are stored");
    assert!(
        !dump.contains("hunter2"),
        "a secret value is in etcd in clear"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(keys.path().join("state.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn without_the_key_file_commands_that_need_secrets_say_so() {
    let cluster = EtcdCluster::start(1, false);
    let keys = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "nokey", keys.path());
    let env = Env::new();
    env.procedure("abc", ABC);
    etcd.medic(
        &env,
        &["start", "abc", "--manual", "--set", "token=hunter2"],
    )
    .run()
    .code(0);
    let Backend::Etcd { url, .. } = &etcd else {
        unreachable!()
    };
    let out = env
        .medic(&["plan", "resume"])
        .env("MEDIC_STATE", url)
        .run()
        .code(2)
        .stderr_contains("--state-key-file");
    assert!(!out.stderr.contains("hunter2"));
    assert_eq!(env.read("log"), "", "nothing ran without the secret");
}

/// Three phases; the second runs long (and is safe to repeat), each marks $MARKS/marks.
const SLOW: &str = r#"
name: slow
phases:
  - id: a
    run: echo a >> "$MARKS/marks"
  - id: b
    idempotent: true
    run: echo b-start >> "$MARKS/marks"; sleep 30; echo b-end >> "$MARKS/marks"
  - id: c
    run: echo c >> "$MARKS/marks"
"#;

/// The state of leaf `id` as `medic plan -o json` shows it, and whether an executor shows.
fn shown(backend: &Backend, env: &Env, id: &str) -> (String, bool) {
    let out = backend.medic(env, &["plan", "-o", "json"]).run();
    if out.code != 0 {
        // Not started yet.
        return (String::new(), false);
    }
    let v = out.json();
    let state = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .map(|p| p["state"].as_str().unwrap().to_string())
        .unwrap_or_default();
    (state, !v["executor"].is_null())
}

fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn a_teammate_takes_over_after_the_executor_dies_and_history_shows_both() {
    let cluster = EtcdCluster::start(1, false);
    let shared = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "takeover", shared.path());
    let marks = shared.path().to_str().unwrap().to_string();
    let (a, b) = (Env::new(), Env::new());
    a.procedure("slow", SLOW);
    b.procedure("slow", SLOW);
    // A lease long enough for the checks within it on a loaded machine.
    let mut child = etcd
        .medic(&a, &["start", "slow"])
        .env("MARKS", &marks)
        .env("MEDIC_STATE_LEASE_TTL", "10")
        .spawn_quiet();
    wait_for("/b to start on A", 30, || {
        shown(&etcd, &b, "/b").0 == "in_progress"
    });
    kill9(child.id());
    let _ = child.wait();
    // Within the lease TTL, B still sees A executing /b.
    assert_eq!(shown(&etcd, &b, "/b"), ("in_progress".to_string(), true));
    etcd.medic(&b, &["plan", "resume"])
        .env("MARKS", &marks)
        .run()
        .code(3)
        .stderr_contains("being executed");
    // Then the lease expires: interrupted, with nobody executing.
    wait_for("/b to show interrupted on B", 30, || {
        shown(&etcd, &b, "/b") == ("interrupted".to_string(), false)
    });
    etcd.medic(&b, &["plan", "resume"])
        .env("MARKS", &marks)
        .run()
        .code(0);
    let marks = std::fs::read_to_string(shared.path().join("marks")).unwrap();
    let lines: Vec<&str> = marks.lines().collect();
    assert_eq!(
        lines,
        ["a", "b-start", "b-start", "b-end", "c"],
        "/a ran once, /b again (it was interrupted), /c once"
    );
    let history = etcd
        .medic(&b, &["plan", "history", "-o", "json"])
        .run()
        .code(0)
        .json();
    let entries = history["history"].as_array().unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no gaps");
    let acquired: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["event"] == "lease_acquired")
        .collect();
    assert_eq!(acquired.len(), 2, "{entries:#?}");
    let (pid_a, pid_b) = (acquired[0]["pid"].as_u64(), acquired[1]["pid"].as_u64());
    assert_eq!(pid_a, Some(child.id() as u64));
    assert_ne!(pid_a, pid_b);
    let takeover = acquired[1]["detail"].as_str().unwrap_or_default();
    assert!(
        takeover.contains(&format!("pid {}", child.id())),
        "the takeover names the old holder: {takeover}"
    );
}

/// One phase that marks itself and takes a while, so two resumes overlap.
const RACE: &str = r#"
name: race
phases:
  - id: a
    run: echo a >> "$MARKS/marks"; sleep 5
  - id: b
    run: echo b >> "$MARKS/marks"
"#;

#[test]
fn two_executors_racing_to_resume_never_both_run() {
    let cluster = EtcdCluster::start(1, false);
    let shared = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "race", shared.path());
    let marks = shared.path().to_str().unwrap().to_string();
    let (a, b) = (Env::new(), Env::new());
    a.procedure("race", RACE);
    b.procedure("race", RACE);
    etcd.medic(&a, &["start", "race", "--manual"]).run().code(0);
    for round in 0..3 {
        let _ = std::fs::remove_file(shared.path().join("marks"));
        if round > 0 {
            for p in ["/b", "/a"] {
                etcd.medic(&a, &["plan", "rollback", "--phase", p])
                    .env("MARKS", &marks)
                    .run()
                    .code(0);
            }
        }
        let children: Vec<_> = [&a, &b]
            .iter()
            .map(|env| {
                etcd.medic(env, &["plan", "resume"])
                    .env("MARKS", &marks)
                    .spawn()
            })
            .collect();
        let mut codes: Vec<i32> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1))
            .collect();
        codes.sort();
        assert_eq!(codes, [0, 3], "round {round}: exactly one executor ran");
        let marks = std::fs::read_to_string(shared.path().join("marks")).unwrap();
        assert_eq!(marks, "a\nb\n", "round {round}: each phase ran once");
    }
}

#[test]
fn migrate_round_trips_an_operation_sled_to_etcd_to_sled() {
    let cluster = EtcdCluster::start(1, false);
    let keys = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "migrate", keys.path());
    let Backend::Etcd { url, .. } = &etcd else {
        unreachable!()
    };
    let env = Env::new();
    env.procedure("abc", ABC);
    let sled = Backend::Sled;
    sled.medic(
        &env,
        &["start", "abc", "--manual", "--set", "token=hunter2"],
    )
    .run()
    .code(0);
    sled.medic(&env, &["plan", "execute", "--phase=/a"])
        .run()
        .code(0);
    sled.medic(&env, &["plan", "execute", "--phase=/b"])
        .run()
        .code(0);
    let export = |backend: &Backend, env: &Env| {
        let json = backend
            .medic(env, &["plan", "export", "--format", "json"])
            .run()
            .code(0)
            .stdout;
        let history = backend
            .medic(env, &["plan", "history", "-o", "json"])
            .run()
            .code(0)
            .stdout;
        let logs = backend.medic(env, &["plan", "logs"]).run().code(0).stdout;
        (json, history, logs)
    };
    let before = export(&sled, &env);
    let key = keys.path().join("state.key");
    let key = key.to_str().unwrap();
    sled.medic(&env, &["state", "migrate", "--to", url])
        .env("MEDIC_STATE_KEY_FILE", key)
        .run()
        .code(0)
        .stdout_contains("copied");
    assert_eq!(export(&etcd, &env), before, "etcd holds the same operation");
    // Refused the second time: never overwritten.
    sled.medic(&env, &["state", "migrate", "--to", url])
        .env("MEDIC_STATE_KEY_FILE", key)
        .run()
        .code(3)
        .stderr_contains("already exists");
    let back = env.path().join("back");
    etcd.medic(&env, &["state", "migrate", "--to", back.to_str().unwrap()])
        .run()
        .code(0);
    let other = Env::new();
    let run_back = |args: &[&str]| {
        other
            .medic(args)
            .env("MEDIC_STATE_DIR", back.to_str().unwrap())
            .run()
            .code(0)
            .stdout
    };
    let after = (
        run_back(&["plan", "export", "--format", "json"]),
        run_back(&["plan", "history", "-o", "json"]),
        run_back(&["plan", "logs"]),
    );
    assert_eq!(
        after, before,
        "sled → etcd → sled is byte-for-byte the same"
    );
    // The secret came back through etcd and still works: /c runs, and /b again.
    other
        .medic(&["plan", "resume"])
        .env("MEDIC_STATE_DIR", back.to_str().unwrap())
        .run()
        .code(0);
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling an etcd member this test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn mark_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("marks"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn losing_quorum_stops_the_executor_and_resume_finishes_after_it_returns() {
    let mut cluster = EtcdCluster::start(3, false);
    let shared = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "quorum", shared.path());
    let marks = shared.path().to_str().unwrap().to_string();
    let env = Env::new();
    let mut yaml = String::from("name: many\nphases:\n");
    for i in 0..40 {
        yaml.push_str(&format!(
            "  - id: p{i:02}\n    idempotent: true\n    run: echo p{i:02} >> \"$MARKS/marks\"; sleep 0.2\n"
        ));
    }
    env.procedure("many", &yaml);
    let stderr = std::fs::File::create(shared.path().join("a.err")).unwrap();
    let mut run = etcd.medic(&env, &["start", "many"]).env("MARKS", &marks);
    run.command
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    let mut a = run.command.spawn().unwrap();
    wait_for("three phases", 30, || mark_lines(shared.path()).len() >= 3);
    // One member of three gone: the run goes on.
    let leader = cluster.leader();
    let victim = (leader + 1) % 3;
    cluster.kill(victim);
    let before = mark_lines(shared.path()).len();
    wait_for("the run to go on with two members", 30, || {
        mark_lines(shared.path()).len() >= before + 5
    });
    // Two of three gone (the second one stopped: a partition): no quorum.
    let second = (victim + 1) % 3;
    let pid = cluster.pid(second).unwrap();
    signal(pid, libc::SIGSTOP);
    let at_loss = mark_lines(shared.path()).len();
    let mut status = None;
    wait_for("the executor to stop", 40, || {
        status = a.try_wait().unwrap();
        status.is_some()
    });
    let code = status.unwrap().code();
    let err = std::fs::read_to_string(shared.path().join("a.err")).unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("state store"), "says why: {err}");
    let after = mark_lines(shared.path()).len();
    assert!(
        after <= at_loss + 1,
        "no phase started after the store was lost ({at_loss} → {after})"
    );
    assert!(after < 40, "the run stopped before its end");
    // Quorum back: resume finishes.
    signal(pid, libc::SIGCONT);
    let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    cluster.wait_healthy(live);
    wait_for("the dead executor's lease to expire", 30, || {
        let out = etcd.medic(&env, &["plan", "-o", "json"]).run();
        out.code == 0 && out.json()["executor"].is_null()
    });
    etcd.medic(&env, &["plan", "resume"])
        .env("MARKS", &marks)
        .run()
        .code(0);
    let lines = mark_lines(shared.path());
    for i in 0..40 {
        let n = lines.iter().filter(|l| **l == format!("p{i:02}")).count();
        assert!(n >= 1, "p{i:02} ran");
    }
    assert!(
        lines.len() <= 41,
        "at most the interrupted phase ran twice: {lines:?}"
    );
    let history = etcd
        .medic(&env, &["plan", "history", "-o", "json"])
        .run()
        .code(0)
        .json();
    let seqs: Vec<u64> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no gaps");
    let completes = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "complete")
        .count();
    assert_eq!(completes, 40, "every transition recorded once");
}

#[test]
fn operations_shows_who_executes_each_operation() {
    let cluster = EtcdCluster::start(1, false);
    let shared = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "ops", shared.path());
    let marks = shared.path().to_str().unwrap().to_string();
    let (a, b) = (Env::new(), Env::new());
    a.procedure("slow", SLOW);
    let mut child = etcd
        .medic(&a, &["start", "slow"])
        .env("MARKS", &marks)
        .env("USER", "alice")
        .spawn_quiet();
    wait_for("/b to start", 30, || {
        shown(&etcd, &b, "/b").0 == "in_progress"
    });
    let out = etcd.medic(&b, &["operations"]).run().code(0);
    assert!(out.stdout.contains("executing"), "{}", out.stdout);
    assert!(
        out.stdout.contains("executed now by alice@"),
        "{}",
        out.stdout
    );
    let json = etcd
        .medic(&b, &["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    let executor = json["operations"][0]["executor"]
        .as_str()
        .unwrap_or_default();
    assert!(executor.starts_with("alice@"), "{json}");
    kill9(child.id());
    let _ = child.wait();
}

/// Leaf states as `medic plan -o json` shows them (interrupted included).
fn leaf_states(backend: &Backend, env: &Env) -> Vec<(String, String)> {
    let v = backend
        .medic(env, &["plan", "-o", "json"])
        .run()
        .code(0)
        .json();
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["group"] == false)
        .map(|p| {
            let id = p["id"].as_str().unwrap().to_string();
            (id, p["state"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_on_etcd_loses_no_transition_and_repeats_no_completed_phase() {
    let cluster = EtcdCluster::start(1, false);
    let shared = tempfile::tempdir().unwrap();
    let etcd = Backend::etcd(&cluster, "crash", shared.path());
    let marks = shared.path().to_str().unwrap().to_string();
    let env = Env::new();
    let mut yaml = String::from("name: crashy\nphases:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - id: p{i:02}\n    idempotent: true\n    run: echo p{i:02} >> \"$MARKS/marks\"; sleep 0.{}\n",
            1 + i % 3
        ));
    }
    env.procedure("crashy", &yaml);
    etcd.medic(&env, &["start", "crashy", "--manual"])
        .run()
        .code(0);
    let mut rng = common::Rng::from_env("etcd crash test");
    let mut frozen: Vec<(String, usize)> = Vec::new();
    let mut completed = 0;
    for _ in 0..12 {
        let child = etcd
            .medic(&env, &["plan", "resume"])
            .env("MARKS", &marks)
            .env("MEDIC_STATE_LEASE_TTL", "2")
            .spawn();
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 900));
        kill9(child.id());
        let _ = child.wait_with_output();
        wait_for("the killed executor's lease to expire", 30, || {
            let out = etcd.medic(&env, &["plan", "-o", "json"]).run();
            out.code == 0 && out.json()["executor"].is_null()
        });
        let states = leaf_states(&etcd, &env);
        assert!(
            !states.iter().any(|(_, s)| s == "in_progress"),
            "a dead executor's phase shows interrupted: {states:?} (seed {})",
            rng.seed
        );
        let done = states.iter().filter(|(_, s)| s == "completed").count();
        assert!(done >= completed, "a completed phase went back: {states:?}");
        completed = done;
        let lines = mark_lines(shared.path());
        for (phase, count) in &frozen {
            let now = lines.iter().filter(|l| *l == phase).count();
            assert_eq!(
                now, *count,
                "completed {phase} ran again (seed {})",
                rng.seed
            );
        }
        for (id, s) in &states {
            let name = id.trim_start_matches('/').to_string();
            if s == "completed" && !frozen.iter().any(|(p, _)| *p == name) {
                let n = lines.iter().filter(|l| **l == name).count();
                frozen.push((name, n));
            }
        }
        if completed == states.len() {
            break;
        }
    }
    etcd.medic(&env, &["plan", "resume"])
        .env("MARKS", &marks)
        .run()
        .code(0);
    assert!(leaf_states(&etcd, &env)
        .iter()
        .all(|(_, s)| s == "completed"));
    // No transition lost: each phase's recorded changes chain, and each completed once.
    let history = etcd
        .medic(&env, &["plan", "history", "-o", "json"])
        .run()
        .code(0)
        .json();
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    let mut completes: std::collections::BTreeMap<String, usize> = Default::default();
    for e in history["history"].as_array().unwrap() {
        let (Some(phase), Some(from), Some(to)) =
            (e["phase"].as_str(), e["from"].as_str(), e["to"].as_str())
        else {
            continue;
        };
        let prev = last.get(phase).map(String::as_str).unwrap_or("unstarted");
        assert_eq!(from, prev, "history of {phase} skips a transition: {e}");
        last.insert(phase.to_string(), to.to_string());
        if e["event"] == "complete" {
            *completes.entry(phase.to_string()).or_default() += 1;
        }
    }
    assert_eq!(completes.len(), 10);
    assert!(completes.values().all(|n| *n == 1), "{completes:?}");
}

#[test]
fn tls_client_certificates_and_bad_state_urls() {
    let cluster = EtcdCluster::start(1, true);
    let env = Env::new();
    env.procedure("abc", ABC);
    let url = format!("etcd://127.0.0.1:{}/tls", cluster.members[0].client_port);
    let cert = |name: &str| cluster.cert(name).to_str().unwrap().to_string();
    let key_file = env.file("state.key");
    let with_tls = |args: &[&str]| {
        env.medic(args)
            .env("MEDIC_STATE", &url)
            .env("MEDIC_STATE_KEY_FILE", key_file.to_str().unwrap())
            .env("MEDIC_STATE_CA", &cert("ca.crt"))
            .env("MEDIC_STATE_CERT", &cert("client.crt"))
            .env("MEDIC_STATE_KEY", &cert("client.key"))
    };
    with_tls(&["start", "abc", "--set", "token=hunter2"])
        .run()
        .code(0);
    with_tls(&["plan"])
        .run()
        .code(0)
        .stdout_contains("3/3 phases completed");
    // Without the client certificate etcd refuses the connection: a clear error, exit 1.
    env.medic(&["plan"])
        .env("MEDIC_STATE", &url)
        .env("MEDIC_STATE_CA", &cert("ca.crt"))
        .run()
        .code(1)
        .stderr_contains("connect to the etcd state store");
    for bad in [
        "etcd://nohost",
        "http://127.0.0.1:2379",
        "etcd://h:notaport",
    ] {
        env.medic(&["operations"])
            .env("MEDIC_STATE", bad)
            .run()
            .code(2)
            .stderr_contains("etcd://HOST:PORT");
    }
}

/// A phase that waits for the test to create `$WORK/go`.
const GATE: &str = r#"
name: gate
description: a phase held until the test releases it
phases:
  - id: a
    run: echo a-done
  - id: wait
    run: while [ ! -f "$WORK/go" ]; do sleep 0.1; done; echo released-by-the-test
  - id: c
    run: echo c-done
"#;

#[test]
fn tail_on_etcd_follows_a_run_to_its_end_through_a_watch() {
    let cluster = EtcdCluster::start(1, false);
    let env = Env::new();
    env.procedure("gate", GATE);
    let etcd = Backend::etcd(&cluster, "tail", env.path());
    let mut executor = etcd.medic(&env, &["start", "gate"]).spawn_quiet();
    wait_for("/wait to start", 30, || {
        shown(&etcd, &env, "/wait").0 == "in_progress"
    });
    let mut follower = etcd.medic(&env, &["plan", "--tail"]).spawn();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(env.path().join("go"), "").unwrap();
    assert!(executor.wait().unwrap().success());
    // The follower ends by itself once the executor released the operation.
    let started = Instant::now();
    while follower.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = follower.kill();
            panic!("medic plan --tail did not end after the run");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = follower.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // Output written after the follower started, and the final table.
    assert!(stdout.contains("released-by-the-test"), "{stdout}");
    assert!(stdout.contains("c-done"), "{stdout}");
    assert!(stdout.contains("3/3 phases completed"), "{stdout}");
}
