//! Sessions that drop: a run survives its terminal (tmux killed, SIGHUP to medic's process
//! group at random moments), a phase's command is never left running unwatched, `--detach`
//! and `plan --tail`, `plan stop` (and `--now`) from another terminal, SIGTERM.

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{history, phase_states, state_of, Env, Rng};

/// `one` writes `one` to `$WORK/ran` when it starts; `two` is slow and appends `effect` to
/// `$WORK/OUT` at its end; every phase appends its name to `$WORK/ran`.
const SLOW: &str = r#"
name: slow
phases:
  - id: one
    run: echo one >> "$WORK/ran"; echo first
  - id: two
    run: echo two >> "$WORK/ran"; echo two-running; bash -c 'sleep 3; echo effect >> "$WORK/OUT"'; echo two-done
  - id: three
    run: echo three >> "$WORK/ran"
"#;

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: signalling the process group of a child this test started in its own group.
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}

/// `medic ARGS` in its own process group (as a shell's job), output discarded.
fn spawn_in_group(env: &Env, args: &[&str]) -> Child {
    let mut run = env.medic(args);
    run.command.process_group(0);
    run.spawn_quiet()
}

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(started.elapsed() < limit, "medic did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events(env: &Env) -> Vec<String> {
    history(env)
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn all_completed(env: &Env) -> bool {
    phase_states(env).iter().all(|(_, s)| s == "completed")
}

#[test]
fn killing_the_tmux_session_leaves_the_run_going_and_tail_follows_it_to_the_end() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let env = Env::new();
    env.procedure("slow", SLOW);
    let socket = env.file("tmux.sock");
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .status()
            .unwrap()
    };
    let command = format!(
        "cd '{dir}' && env MEDIC_STATE_DIR='{dir}/state' MEDIC_PLANS_DIR='{dir}/plans' WORK='{dir}' NO_COLOR=1 '{medic}' start slow",
        dir = env.path().display(),
        medic = env!("CARGO_BIN_EXE_medic"),
    );
    assert!(tmux(&["new-session", "-d", "-s", "run", &command]).success());
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    assert!(tmux(&["kill-session", "-t", "run"]).success());
    let _ = tmux(&["kill-server"]);
    assert!(
        env.read("OUT").is_empty(),
        "phase two ended before the hangup"
    );
    let tail = env.medic(&["plan", "--tail"]).run().no_panic().code(0);
    tail.stdout_lacks("interrupted");
    assert!(all_completed(&env), "{:?}", phase_states(&env));
    assert_eq!(env.read("OUT"), "effect\n");
    assert_eq!(env.read("ran"), "one\ntwo\nthree\n");
    let entries = history(&env);
    let hangup = entries
        .iter()
        .find(|e| e["event"] == "hangup")
        .unwrap_or_else(|| panic!("no hangup in history: {entries:#?}"));
    assert!(hangup["detail"]
        .as_str()
        .unwrap()
        .contains("the terminal went away; the run continues in pid"));
}

#[test]
fn sighup_to_the_process_group_at_random_moments_never_loses_or_repeats_a_phase() {
    const QUICK: &str = r#"
name: quick
phases:
  - id: a
    run: echo a >> "$WORK/ran"; sleep 0.2
  - id: b
    run: echo b >> "$WORK/ran"; sleep 0.3
  - id: c
    run: echo c >> "$WORK/ran"; sleep 0.2
  - id: d
    run: echo d >> "$WORK/ran"
"#;
    let mut rng = Rng::from_env("sighup");
    for round in 0..20 {
        let env = Env::new();
        env.procedure("quick", QUICK);
        let mut child = spawn_in_group(&env, &["start", "quick"]);
        // medic handles SIGHUP once its arguments are parsed, before it creates the state
        // directory; a signal before the process has even reached main (exec on a loaded
        // machine can take longer than the smallest delay) is the kernel's default, not ours.
        let state = env.state_dir();
        wait_for("the state directory", Duration::from_secs(20), || {
            state.exists()
        });
        let delay = rng.next() % 900;
        std::thread::sleep(Duration::from_millis(delay));
        signal_group(child.id(), libc::SIGHUP);
        let code = wait_exit(&mut child, Duration::from_secs(30));
        assert_eq!(code, 0, "round {round}: SIGHUP after {delay} ms");
        assert!(
            all_completed(&env),
            "round {round}: {:?}",
            phase_states(&env)
        );
        assert_eq!(env.read("ran"), "a\nb\nc\nd\n", "round {round}");
        if delay < 800 {
            assert!(
                events(&env).contains(&"hangup".to_string()),
                "round {round}: no hangup recorded after {delay} ms"
            );
        }
    }
}

#[test]
fn a_signal_to_medics_whole_group_never_leaves_the_command_running_unwatched() {
    // Hangup: medic keeps watching the command and finishes the run.
    let env = Env::new();
    env.procedure("slow", SLOW);
    let mut child = spawn_in_group(&env, &["start", "slow"]);
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    signal_group(child.id(), libc::SIGHUP);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
    assert_eq!(env.read("OUT"), "effect\n");
    assert!(all_completed(&env));

    // Terminate: medic stops the command; nothing of it runs on after medic is gone.
    let env = Env::new();
    env.procedure("slow", SLOW);
    let mut child = spawn_in_group(&env, &["start", "slow"]);
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    signal_group(child.id(), libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(env.read("OUT"), "", "the command ran on after SIGTERM");
    assert_eq!(state_of(&env, "/two"), "failed");

    // SIGKILL to the whole group: medic cannot decide, its watchdog still stops the command.
    let env = Env::new();
    env.procedure("slow", SLOW);
    let mut child = spawn_in_group(&env, &["start", "slow"]);
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    std::thread::sleep(Duration::from_millis(200));
    signal_group(child.id(), libc::SIGKILL);
    let _ = child.wait();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        env.read("OUT"),
        "",
        "the command ran on after medic was killed"
    );
}

#[test]
fn sigterm_records_the_phase_interrupted_and_resume_needs_force_for_a_non_idempotent_one() {
    let env = Env::new();
    env.procedure("slow", SLOW);
    let mut child = env.medic(&["start", "slow"]).spawn_quiet();
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    // SAFETY: signalling a child of this test.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 1);
    assert_eq!(state_of(&env, "/two"), "failed");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("/two failed: interrupted: terminated");
    let entries = history(&env);
    assert!(entries.iter().any(|e| e["event"] == "stop_requested"
        && e["detail"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: terminated")));
    env.medic(&["plan", "resume"])
        .run()
        .code(3)
        .stderr_contains("phase /two was interrupted and is not idempotent");
    env.medic(&["plan", "resume", "--force"]).run().code(0);
    assert!(all_completed(&env));
    assert_eq!(env.read("ran"), "one\ntwo\ntwo\nthree\n");
}

#[test]
fn detach_returns_at_once_and_tail_follows_the_run_to_its_end() {
    let env = Env::new();
    env.procedure("slow", SLOW);
    let started = Instant::now();
    let out = env.medic(&["start", "slow", "--detach"]).run().code(0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "--detach waited for the run"
    );
    out.stdout_contains("runs detached in pid")
        .stdout_contains("medic plan --tail --operation")
        .stdout_contains("medic plan stop --operation");
    assert!(env.read("OUT").is_empty());
    let tail = env.medic(&["plan", "--tail"]).run().code(0);
    // The running phase's output, then the end.
    tail.stdout_contains("/two [out] two-done")
        .stdout_contains("3/3 phases completed");
    assert_eq!(env.read("OUT"), "effect\n");
    let ev = events(&env);
    assert!(ev.contains(&"lease_released".to_string()), "{ev:?}");
    assert_eq!(
        ev.iter().filter(|e| *e == "complete").count(),
        3,
        "a detached run records every phase: {ev:?}"
    );
    env.medic(&["attach"])
        .run()
        .code(0)
        .stdout_contains("3/3 phases completed");

    // plan resume --detach, with -o json.
    let env = Env::new();
    env.procedure("slow", SLOW);
    env.medic(&["start", "slow", "--manual"]).run().code(0);
    let out = env
        .medic(&["plan", "resume", "--detach", "-o", "json"])
        .run()
        .code(0);
    assert_eq!(out.json()["detached"], true);
    assert!(out.json()["pid"].as_u64().is_some());
    env.medic(&["plan", "--tail"]).run().code(0);
    assert!(all_completed(&env));
}

#[test]
fn a_detached_executor_that_refuses_reports_it_to_its_starter() {
    let env = Env::new();
    env.procedure("slow", SLOW);
    env.medic(&["start", "slow", "--manual"]).run().code(0);
    env.medic(&["plan", "execute", "--phase=/three", "--detach"])
        .run()
        .code(3)
        .stderr_contains("requires /two");
}

#[test]
fn plan_stop_stops_a_detached_run_and_records_why() {
    let env = Env::new();
    env.procedure("slow", SLOW);
    env.medic(&["start", "slow", "--detach"]).run().code(0);
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    let asked = Instant::now();
    env.medic(&["plan", "stop", "--reason", "window over"])
        .run()
        .code(0)
        .stdout_contains("stopped after");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        asked.elapsed()
    );
    assert_eq!(state_of(&env, "/two"), "failed");
    assert_eq!(state_of(&env, "/three"), "unstarted");
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("with `medic plan stop`: window over");
    let entries = history(&env);
    let stop = entries
        .iter()
        .find(|e| e["event"] == "stop_requested")
        .expect("stop recorded");
    assert_eq!(stop["reason"], "window over");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(env.read("OUT"), "", "the stopped command ran on");
    // Nothing runs any more: a second stop says so.
    env.medic(&["plan", "stop"])
        .run()
        .code(0)
        .stdout_contains("no executor to stop");
}

#[test]
fn plan_stop_now_exits_the_executor_at_once_leaving_the_phase_interrupted() {
    let env = Env::new();
    env.procedure("slow", SLOW);
    env.medic(&["start", "slow", "--detach"]).run().code(0);
    wait_for("phase two", Duration::from_secs(20), || {
        env.read("ran").contains("two")
    });
    env.medic(&["plan", "stop", "--now"]).run().code(0);
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains("interrupted");
    assert!(events(&env).contains(&"stopped_at_once".to_string()));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        env.read("OUT"),
        "",
        "the command ran on after the executor exited"
    );
    env.medic(&["plan", "resume"]).run().code(3);
}
