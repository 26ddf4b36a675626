//! Store damage, through the real binary: the state directory deleted, replaced, read-only,
//! not ours, on a full disk, or held by a stopped process. In every case medic says what
//! happened and what to do, never "damaged ... move it aside" for intact state, never
//! creates a database in place of a lost one, and starts no phase after the store failed.
//!
//! Cases that need a mount (tmpfs, remount read-only) or another user (`setpriv`) run as
//! root and print a note and pass when that is not available.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{phase_states, Env, Output};

/// A gate phase that waits for `$WORK/go` (so a test can act while it runs), then a phase
/// that leaves a mark if it runs.
const GATED: &str = r#"
name: gated
phases:
  - id: gate
    run: 'touch "$WORK/gate-started"; while [ ! -f "$WORK/go" ]; do sleep 0.05; done'
  - id: after
    run: 'touch "$WORK/after-ran"'
"#;

/// Quick phases (the executor keeps the database open across them), then a mark.
fn quick(n: usize) -> String {
    let mut yaml = String::from(
        "name: quick\nphases:\n  - id: first\n    run: 'touch \"$WORK/quick-started\"'\n",
    );
    for i in 0..n {
        yaml.push_str(&format!("  - id: c{i}\n    check: \"true\"\n"));
    }
    yaml.push_str("  - id: last\n    run: 'touch \"$WORK/last-ran\"'\n");
    yaml
}

/// The advice for real damage, which would lose intact state if followed.
const NOT_DAMAGE: &str = "is damaged";

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().expect("wait for medic");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a child process of the test.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A small tmpfs mounted on `dir`, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        if !is_root()
            || !sh(&format!(
                "mount -t tmpfs -o size={size},mode=0700 medic-test '{}' 2>/dev/null",
                dir.display()
            ))
        {
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        sh(&format!("umount -l '{}'", self.0.display()));
    }
}

fn skip(case: &str, why: &str) {
    eprintln!("note: store case `{case}` skipped: {why}");
}

/// `medic` as the unprivileged user `nobody` (setpriv), with the test directory reachable.
fn as_nobody(env: &Env, args: &[&str]) -> Option<Output> {
    if !is_root() || !sh("command -v setpriv >/dev/null") {
        return None;
    }
    for p in [env.path().to_path_buf(), env.path().join("plans")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for e in std::fs::read_dir(env.path().join("plans"))
        .unwrap()
        .flatten()
    {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut run = env.medic(args);
    let program = run.command.get_program().to_owned();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(run.command.get_args())
        .current_dir(env.path())
        .envs(
            run.command
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("TMPDIR", "/tmp");
    run.command = command;
    Some(run.run())
}

/// Whether `pid` holds the flock on the state database (from /proc/locks).
fn holds_db_lock(env: &Env, pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(env.state_dir().join("medic.db").join("db")) else {
        return false;
    };
    let needle = format!(":{} ", m.ino());
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(&format!(" {pid} ")) && l.contains(&needle))
}

/// Deletes the state directory out from under a running executor. A plain `remove_dir_all` races
/// with the executor's own writes (a file created after the listing makes the last `rmdir` fail
/// with ENOTEMPTY), so the directory is first renamed away in one step, which is what the executor
/// sees as the deletion, and then removed at leisure.
fn delete_while_in_use(env: &Env) {
    let trash = env.file("state.deleted");
    std::fs::rename(env.state_dir(), &trash).unwrap();
    let _ = std::fs::remove_dir_all(&trash);
}

fn deleted_mid_run() {
    let env = Env::new();
    env.procedure("gated", GATED);
    let run = env.medic(&["start", "gated"]).spawn();
    wait_for("the gate phase", || env.file("gate-started").exists());
    delete_while_in_use(&env);
    std::fs::write(env.file("go"), "").unwrap();
    let out = finish(run)
        .no_panic()
        .code(1)
        .stderr_contains(&format!(
            "the state directory {} was deleted",
            env.state_dir().display()
        ))
        .stdout_lacks("every phase completed");
    assert!(
        !env.file("after-ran").exists(),
        "a phase started after\n{out:?}"
    );
    assert!(
        !env.state_dir().exists(),
        "the state directory was recreated"
    );
    env.medic(&["operations"])
        .run()
        .code(0)
        .stdout_contains("no state directory at")
        .stdout_lacks("no operations yet");
    assert!(!env.state_dir().exists(), "`medic operations` created it");
}

fn deleted_while_held_across_quick_phases() {
    let env = Env::new();
    env.procedure("quick", &quick(1500));
    env.medic(&["start", "quick", "--manual"]).run().code(0);
    let mut run = env.medic(&["plan", "resume"]).spawn();
    // Wait until the executor holds the database between quick phases, then delete it.
    wait_for("the executor to hold the database", || {
        (env.file("quick-started").exists() && holds_db_lock(&env, run.id()))
            || run.try_wait().unwrap().is_some()
    });
    delete_while_in_use(&env);
    let out = finish(run).no_panic();
    if out.code == 0 {
        // It finished between the check and the deletion: nothing to judge.
        return skip("deleted while held", "the run finished before the deletion");
    }
    out.code(1).stderr_contains("was deleted");
    assert!(!env.file("last-ran").exists(), "the last phase ran");
    assert!(
        !env.state_dir().exists(),
        "the state directory was recreated"
    );
}

fn replaced_mid_run() {
    let env = Env::new();
    env.procedure("gated", GATED);
    let run = env.medic(&["start", "gated"]).spawn();
    wait_for("the gate phase", || env.file("gate-started").exists());
    let state = env.state_dir();
    let old = env.file("state.old");
    std::fs::rename(&state, &old).unwrap();
    assert!(sh(&format!(
        "cp -a '{}' '{}'",
        old.display(),
        state.display()
    )));
    std::fs::write(env.file("go"), "").unwrap();
    finish(run)
        .no_panic()
        .code(1)
        .stderr_contains("was replaced while this medic process used it")
        .stdout_lacks("every phase completed");
    assert!(!env.file("after-ran").exists(), "a phase started after");
    // The replacement holds what was copied: the gate started, its end never written there.
    assert_eq!(
        phase_states(&env),
        [
            ("/gate".to_string(), "interrupted".to_string()),
            ("/after".to_string(), "unstarted".to_string())
        ]
    );
}

fn missing_state_dir_is_reported_and_not_created() {
    let env = Env::new();
    let dir = env.state_dir().display().to_string();
    for args in [
        vec!["plan"],
        vec!["plan", "history"],
        vec!["plan", "export", "--format", "json"],
        vec!["plan", "resume"],
    ] {
        env.medic(&args)
            .run()
            .no_panic()
            .code(2)
            .stderr_contains(&format!("no state directory at {dir}"));
    }
    let json = env
        .medic(&["operations", "-o", "json"])
        .run()
        .code(0)
        .json();
    assert_eq!(json["operations"], serde_json::json!([]));
    assert!(json["note"]
        .as_str()
        .unwrap()
        .contains("no state directory"));
    assert!(
        !env.state_dir().exists(),
        "a reader created the state directory"
    );
    // A directory without a database: readers say so and leave it empty.
    std::fs::create_dir(env.state_dir()).unwrap();
    env.medic(&["plan"])
        .run()
        .code(2)
        .stderr_contains("no state database in");
    env.medic(&["operations"])
        .run()
        .code(0)
        .stdout_contains("no state database in");
    assert_eq!(std::fs::read_dir(env.state_dir()).unwrap().count(), 0);
}

fn created_state_dir_is_owner_only() {
    let env = Env::new();
    env.procedure("gated", GATED);
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    for p in [env.state_dir(), env.state_dir().join("medic.db")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
    }
}

fn read_only_state_dir() {
    let env = Env::new();
    env.procedure("gated", GATED);
    let Some(_mount) = Mount::tmpfs(&env.state_dir(), "8m") else {
        return skip("read-only", "cannot mount a tmpfs (needs root)");
    };
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    assert!(sh(&format!(
        "mount -o remount,ro '{}'",
        env.state_dir().display()
    )));
    let tmp = env.file("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let tmp_s = tmp.to_str().unwrap();
    for args in [
        vec!["operations"],
        vec!["plan"],
        vec!["plan", "-o", "json"],
        vec!["plan", "export", "--format", "markdown"],
        vec!["plan", "history"],
        vec!["plan", "logs"],
        vec!["plan", "resume", "--dry-run"],
    ] {
        env.medic(&args)
            .env("TMPDIR", tmp_s)
            .run()
            .no_panic()
            .code(0);
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "readers left their private copies behind"
    );
    let out = env
        .medic(&["plan", "resume"])
        .env("TMPDIR", tmp_s)
        .run()
        .no_panic()
        .code(2)
        .stderr_contains("is read-only")
        .stderr_contains("remount it read-write");
    assert!(!out.stderr.contains(NOT_DAMAGE), "{out:?}");
    assert!(!env.file("gate-started").exists(), "a phase ran");
}

fn permission_denied() {
    let env = Env::new();
    env.procedure("gated", GATED);
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    // The state directory is root's, mode 0700: nobody can neither read nor write it.
    let Some(out) = as_nobody(&env, &["plan"]) else {
        return skip("permission denied", "needs root and setpriv");
    };
    let out = out
        .no_panic()
        .code(2)
        .stderr_contains("permission denied")
        .stderr_contains("owned by root")
        .stderr_contains("medic runs as nobody");
    assert!(!out.stderr.contains(NOT_DAMAGE), "{out:?}");
    as_nobody(&env, &["plan", "resume"])
        .unwrap()
        .code(2)
        .stderr_contains("permission denied");
    // Readable but not writable: reading works (from a private copy), changing does not.
    assert!(sh(&format!(
        "chmod -R go+rX '{}'",
        env.state_dir().display()
    )));
    as_nobody(&env, &["plan"])
        .unwrap()
        .no_panic()
        .code(0)
        .stdout_contains("/gate");
    as_nobody(&env, &["operations"]).unwrap().code(0);
    as_nobody(&env, &["plan", "resume"])
        .unwrap()
        .code(2)
        .stderr_contains("permission denied");
    assert!(!env.file("gate-started").exists(), "a phase ran");
    // The owner still has it all.
    assert_eq!(phase_states(&env)[0].1, "unstarted");
}

fn disk_full() {
    let env = Env::new();
    env.procedure("gated", GATED);
    let Some(_mount) = Mount::tmpfs(&env.state_dir(), "2m") else {
        return skip("disk full", "cannot mount a tmpfs (needs root)");
    };
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    let filler = env.state_dir().join("filler");
    sh(&format!(
        "dd if=/dev/zero of='{}' bs=4k 2>/dev/null",
        filler.display()
    ));
    let out = env
        .medic(&["plan", "resume"])
        .run()
        .no_panic()
        .code(1)
        .stderr_contains("no space left on the file system of")
        .stderr_contains("do not move it aside");
    assert!(!out.stderr.contains(NOT_DAMAGE), "{out:?}");
    assert!(
        !env.file("gate-started").exists(),
        "a phase ran without its start recorded"
    );
    // Reading still works on the full disk.
    env.medic(&["plan"]).run().code(0).stdout_contains("/gate");
    // Space back: the state was intact all along.
    std::fs::remove_file(&filler).unwrap();
    std::fs::write(env.file("go"), "").unwrap();
    env.medic(&["plan", "resume"])
        .run()
        .code(0)
        .stdout_contains("every phase completed");
    assert!(env.file("after-ran").exists());
}

fn stopped_executor_holding_the_database() {
    let env = Env::new();
    env.procedure("quick", &quick(3000));
    env.medic(&["start", "quick", "--manual"]).run().code(0);
    let run = env.medic(&["plan", "resume"]).spawn_quiet();
    let pid = run.id();
    // Stop it at a moment it holds the database (it does between quick phases).
    let mut held = false;
    for _ in 0..200 {
        signal(pid, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(20));
        if holds_db_lock(&env, pid) {
            held = true;
            break;
        }
        signal(pid, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut run = run;
    if !held {
        signal(pid, libc::SIGCONT);
        let _ = run.wait();
        return skip("stopped executor", "never caught it holding the database");
    }
    for args in [vec!["plan"], vec!["operations"], vec!["plan", "resume"]] {
        let started = Instant::now();
        let out = env.medic(&args).run();
        let took = started.elapsed();
        eprintln!("`medic {}` answered in {took:?}", args.join(" "));
        out.no_panic()
            .code(3)
            .stderr_contains(&format!("pid {pid} (medic plan resume) holds it"))
            .stderr_contains("is stopped")
            .stderr_contains(&format!("kill -CONT {pid}"));
        // The issue asks for 2 s; the bound is generous for a loaded 2-core machine.
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
    signal(pid, libc::SIGCONT);
    assert!(
        run.wait().unwrap().success(),
        "the executor went on after SIGCONT"
    );
    assert!(env.file("last-ran").exists());
}

fn stopped_executor_in_a_slow_phase() {
    let env = Env::new();
    env.procedure("gated", GATED);
    env.medic(&["start", "gated", "--manual"]).run().code(0);
    let mut run = env.medic(&["plan", "resume"]).spawn_quiet();
    let pid = run.id();
    wait_for("the gate phase", || env.file("gate-started").exists());
    signal(pid, libc::SIGSTOP);
    // The database is not held across a slow action: readers get in, and say it is stopped.
    env.medic(&["plan"])
        .run()
        .code(0)
        .stdout_contains(&format!("executing now: pid {pid}"))
        .stdout_contains(&format!("stopped (suspended with Ctrl-Z or SIGSTOP): resume it with `fg` in its terminal or `kill -CONT {pid}`"));
    env.medic(&["plan", "execute", "--phase=/after"])
        .run()
        .code(3)
        .stderr_contains(&format!("kill -CONT {pid}"));
    signal(pid, libc::SIGCONT);
    std::fs::write(env.file("go"), "").unwrap();
    assert!(run.wait().unwrap().success());
}

#[test]
fn store_damage() {
    let cases: Vec<(&str, fn())> = vec![
        ("deleted mid-run", deleted_mid_run),
        (
            "deleted while held across quick phases",
            deleted_while_held_across_quick_phases,
        ),
        ("replaced mid-run", replaced_mid_run),
        (
            "missing state dir is reported and not created",
            missing_state_dir_is_reported_and_not_created,
        ),
        (
            "created state dir is owner only",
            created_state_dir_is_owner_only,
        ),
        ("read-only state dir", read_only_state_dir),
        ("permission denied", permission_denied),
        ("disk full", disk_full),
        (
            "stopped executor holding the database",
            stopped_executor_holding_the_database,
        ),
        (
            "stopped executor in a slow phase",
            stopped_executor_in_a_slow_phase,
        ),
    ];
    common::run_table(&cases, |(name, _)| name, |(_, case)| case());
}
