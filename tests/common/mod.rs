//! A small fluent helper for running the real `medic` binary in a temporary directory.
//!
//! ```ignore
//! let env = Env::new();
//! env.procedure("p", "name: p\nphases: ...");
//! env.medic(&["start", "p"]).run().code(0).stdout_contains("done");
//! ```
#![allow(dead_code)] // each test binary uses a different part of the helper

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("medic-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("plans")).unwrap();
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Writes `plans/NAME.yaml`.
    pub fn procedure(&self, name: &str, yaml: &str) -> &Self {
        std::fs::write(self.path().join("plans").join(format!("{name}.yaml")), yaml).unwrap();
        self
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    /// The medic binary with this environment's state and plans directories.
    pub fn medic(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_medic"));
        command
            .current_dir(self.path())
            .env("MEDIC_STATE_DIR", self.state_dir())
            .env("MEDIC_PLANS_DIR", self.path().join("plans"))
            .env("NO_COLOR", "1")
            .env("WORK", self.path())
            .args(args)
            .stdin(Stdio::null());
        Run { command }
    }
}

pub struct Run {
    pub command: Command,
}

impl Run {
    pub fn arg(mut self, a: &str) -> Self {
        self.command.arg(a);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.command.env(k, v);
        self
    }

    pub fn run(mut self) -> Output {
        let out = self.command.output().expect("run medic");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Spawns with output discarded (for long runs nobody reads).
    pub fn spawn_quiet(mut self) -> Child {
        self.command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn medic")
    }

    pub fn spawn(mut self) -> Child {
        self.command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn medic")
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.show());
        self
    }

    pub fn stdout_contains(self, s: &str) -> Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}\n{}",
            self.show()
        );
        self
    }

    pub fn stderr_contains(self, s: &str) -> Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\n{}",
            self.show()
        );
        self
    }

    pub fn stdout_lacks(self, s: &str) -> Self {
        assert!(
            !self.stdout.contains(s),
            "stdout has {s:?}\n{}",
            self.show()
        );
        self
    }

    pub fn no_panic(self) -> Self {
        assert!(
            !self.stderr.contains("panicked"),
            "medic panicked\n{}",
            self.show()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.show()))
    }
}

/// The states of the leaf phases as `medic plan -o json` reports them.
pub fn phase_states(env: &Env) -> Vec<(String, String)> {
    let out = env.medic(&["plan", "-o", "json"]).run().code(0);
    out.json()["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["group"] == false)
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every history entry of the operation `medic plan` would show.
pub fn history(env: &Env) -> Vec<serde_json::Value> {
    let out = env.medic(&["plan", "history", "-o", "json"]).run().code(0);
    out.json()["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The history entries that record a `--force` override.
pub fn forced_entries(env: &Env) -> Vec<serde_json::Value> {
    history(env)
        .into_iter()
        .filter(|e| e["forced"] == true)
        .collect()
}

pub fn state_of(env: &Env, id: &str) -> String {
    phase_states(env)
        .into_iter()
        .find(|(p, _)| p == id)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no phase {id}"))
}

/// xorshift64*, seeded from `MEDIC_CRASH_SEED` or the clock; the seed is printed so a failing
/// run of a randomized test can be replayed.
pub struct Rng {
    state: u64,
    pub seed: u64,
}

impl Rng {
    pub fn from_env(label: &str) -> Rng {
        let seed = std::env::var("MEDIC_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ 0x9E3779B97F4A7C15
            });
        eprintln!("{label} seed: MEDIC_CRASH_SEED={seed}");
        Rng {
            state: seed.max(1),
            seed,
        }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

/// SIGKILL, as a crash or `kill -9` would end medic.
pub fn kill9(pid: u32) {
    // SAFETY: signalling a child process of the test.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

pub mod drill;
pub mod etcd;
pub mod kube;
pub mod sshd;

/// Runs every case of a table test, even after one fails, then fails naming each case that
/// did (each printed its own details as it failed).
pub fn run_table<T>(cases: &[T], name: impl Fn(&T) -> &str, check: impl Fn(&T)) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| {
            let ok = catch_unwind(AssertUnwindSafe(|| check(c))).is_ok();
            if !ok {
                eprintln!("^^^ case `{}` failed\n", name(c));
            }
            !ok
        })
        .map(&name)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed: {}",
        failed.len(),
        cases.len(),
        failed.join(", ")
    );
}
