//! Inputs that must be refused (issue 10, §3), run through the real binary.
//!
//! Each case is an input and what medic must answer: exit 2, a message fragment (with
//! `file:line:column` where the input has a place in a file), and nothing half-written (no
//! operation left behind, no history entry added). A second table holds the inputs next to
//! them that must keep working, so a refusal cannot be made by refusing too much. Every run
//! has a time bound (a `--set-file /dev/zero` that reads forever fails the case, it does not
//! hang the suite).

mod common;

use std::io::Read as _;
use std::time::{Duration, Instant};

use common::{Env, Output};

/// How long one medic command may take before the case fails.
const BOUND: Duration = Duration::from_secs(60);

/// One input and what medic must say about it.
struct Case {
    name: &'static str,
    /// Files under `plans/`.
    plans: Vec<(&'static str, Vec<u8>)>,
    /// Files in the test directory (`cluster.yaml`, values for `--set-file`).
    files: Vec<(&'static str, Vec<u8>)>,
    /// FIFOs to create in the test directory.
    fifos: Vec<&'static str>,
    /// Environment for the commands; an empty value sets the variable to "".
    env: Vec<(&'static str, &'static str)>,
    /// Variables removed from the environment.
    unset: Vec<&'static str>,
    /// Commands that must succeed first (e.g. creating an operation).
    setup: Vec<Vec<&'static str>>,
    /// The command; `{dir}` stands for the test directory.
    args: Vec<&'static str>,
    code: i32,
    stderr: Vec<&'static str>,
    stdout: Vec<&'static str>,
    lacks: Vec<&'static str>,
    /// Check that no operation exists afterwards.
    no_operation: bool,
    /// Check that the operation's history did not change.
    history_unchanged: bool,
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        plans: Vec::new(),
        files: Vec::new(),
        fifos: Vec::new(),
        env: Vec::new(),
        unset: Vec::new(),
        setup: Vec::new(),
        args: Vec::new(),
        code: 2,
        stderr: Vec::new(),
        stdout: Vec::new(),
        lacks: Vec::new(),
        no_operation: false,
        history_unchanged: false,
    }
}

/// `medic start p` on `plans/p.yaml`.
fn procedure(name: &'static str, yaml: &str) -> Case {
    case(name)
        .plan("p.yaml", yaml)
        .args(&["start", "p"])
        .no_operation()
}

impl Case {
    fn plan(mut self, file: &'static str, contents: impl Into<Vec<u8>>) -> Self {
        self.plans.push((file, contents.into()));
        self
    }
    fn file(mut self, name: &'static str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name, contents.into()));
        self
    }
    fn fifo(mut self, name: &'static str) -> Self {
        self.fifos.push(name);
        self
    }
    fn env(mut self, key: &'static str, value: &'static str) -> Self {
        self.env.push((key, value));
        self
    }
    fn unset(mut self, key: &'static str) -> Self {
        self.unset.push(key);
        self
    }
    fn setup(mut self, args: &[&'static str]) -> Self {
        self.setup.push(args.to_vec());
        self
    }
    fn args(mut self, args: &[&'static str]) -> Self {
        self.args = args.to_vec();
        self
    }
    fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
    fn says(mut self, fragments: &[&'static str]) -> Self {
        self.stderr.extend_from_slice(fragments);
        self
    }
    fn prints(mut self, fragments: &[&'static str]) -> Self {
        self.stdout.extend_from_slice(fragments);
        self
    }
    fn lacks(mut self, fragments: &[&'static str]) -> Self {
        self.lacks.extend_from_slice(fragments);
        self
    }
    fn no_operation(mut self) -> Self {
        self.no_operation = true;
        self
    }
    fn history_unchanged(mut self) -> Self {
        self.history_unchanged = true;
        self
    }
    /// For an accepted command on an operation, which may well add to its history.
    fn history_may_change(mut self) -> Self {
        self.history_unchanged = false;
        self
    }

    fn run(&self, env: &Env, args: &[&str]) -> Output {
        let dir = env.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir)).collect();
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let mut run = env.medic(&args);
        for (k, v) in &self.env {
            run = run.env(k, v);
        }
        for k in &self.unset {
            run.command.env_remove(k);
        }
        run_bounded(run)
    }

    fn check(&self) {
        let env = Env::new();
        for (name, contents) in &self.plans {
            std::fs::write(env.path().join("plans").join(name), contents).unwrap();
        }
        for (name, contents) in &self.files {
            std::fs::write(env.path().join(name), contents).unwrap();
        }
        for name in &self.fifos {
            let status = std::process::Command::new("mkfifo")
                .arg(env.path().join(name))
                .status()
                .unwrap();
            assert!(status.success(), "mkfifo");
        }
        for args in &self.setup {
            self.run(&env, args).no_panic().code(0);
        }
        let history = |env: &Env| {
            self.run(env, &["plan", "history", "-o", "json"])
                .code(0)
                .json()["history"]
                .clone()
        };
        let before = self.history_unchanged.then(|| history(&env));
        let mut out = self.run(&env, &self.args).no_panic().code(self.code);
        for fragment in &self.stderr {
            out = out.stderr_contains(fragment);
        }
        for fragment in &self.stdout {
            out = out.stdout_contains(fragment);
        }
        for fragment in &self.lacks {
            assert!(
                !out.stderr.contains(fragment) && !out.stdout.contains(fragment),
                "output shows {fragment:?}\n--- stdout\n{}\n--- stderr\n{}",
                out.stdout,
                out.stderr
            );
        }
        if self.no_operation {
            let list = self.run(&env, &["operations", "-o", "json"]).code(0);
            assert_eq!(
                list.json()["operations"],
                serde_json::json!([]),
                "a refused `{}` left an operation behind",
                self.args.join(" ")
            );
        }
        if let Some(before) = before {
            assert_eq!(
                history(&env),
                before,
                "a refused `{}` changed the history",
                self.args.join(" ")
            );
        }
    }
}

/// Runs medic with output captured, failing if it takes longer than [`BOUND`].
fn run_bounded(run: common::Run) -> Output {
    let mut child = run.spawn();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("medic did not answer within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// Runs every case, then fails once, naming each case that failed.
fn run_table(cases: Vec<Case>) -> usize {
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case name {:?} used twice", c.name);
    }
    common::run_table(&cases, |c| c.name, |c| c.check());
    cases.len()
}

/// Two ordered phases, `/a` then `/g/b`; enough to execute and roll back.
const TWO: &str = "name: p\nphases:\n  - id: a\n    run: echo a\n  - id: g\n    phases:\n      - id: b\n        run: echo b\n";

/// A completed operation of [`TWO`], then `medic plan ARGS`.
fn on_operation(name: &'static str, args: &[&'static str]) -> Case {
    case(name)
        .plan("p.yaml", TWO)
        .setup(&["start", "p"])
        .args(args)
        .history_unchanged()
}

#[test]
fn phase_ids_typed_by_the_operator() {
    run_table(vec![
        // The example of the issue: an unset shell variable rolled back every phase.
        on_operation(
            "rollback with an empty phase",
            &["plan", "rollback", "--phase="],
        )
        .says(&["--phase: the phase ID is empty", "or / for the whole plan"]),
        on_operation(
            "execute with an empty phase",
            &["plan", "execute", "--phase", ""],
        )
        .says(&["--phase: the phase ID is empty"]),
        on_operation(
            "rollback with a blank phase",
            &["plan", "rollback", "--phase= "],
        )
        .says(&["--phase: the phase ID is empty"]),
        on_operation("rollback //", &["plan", "rollback", "--phase=//"])
            .says(&["--phase: `//` is not a phase ID: it ends with `/`"]),
        on_operation("rollback /a//b", &["plan", "rollback", "--phase=/g//b"])
            .says(&["--phase: `/g//b` is not a phase ID: it has an empty segment (`//`)"]),
        on_operation(
            "rollback with a trailing slash",
            &["plan", "rollback", "--phase=/g/"],
        )
        .says(&["--phase: `/g/` is not a phase ID: it ends with `/`"]),
        on_operation("execute ..", &["plan", "execute", "--phase=/g/.."])
            .says(&["`..` is not a phase"]),
        on_operation("execute ./a", &["plan", "execute", "--phase=./a"])
            .says(&["`.` is not a phase"]),
        on_operation(
            "execute with a space inside",
            &["plan", "execute", "--phase=/g/ b"],
        )
        .says(&["` b` is not a phase name"]),
        on_operation("execute with capitals", &["plan", "execute", "--phase=/G"])
            .says(&["`G` is not a phase name"]),
        on_operation("logs of //", &["plan", "logs", "--phase=//"])
            .says(&["--phase: `//` is not a phase ID"]),
        on_operation("logs of an empty phase", &["plan", "logs", "--phase="])
            .says(&["--phase: the phase ID is empty"]),
        on_operation(
            "an empty operation",
            &["plan", "rollback", "--operation=", "--phase=/a"],
        )
        .says(&["--operation is empty"]),
    ]);
}

#[test]
fn phase_ids_in_requires() {
    let requires = |name, req: &'static str| {
        procedure(
            name,
            &format!("name: p\nphases:\n  - id: a\n    run: echo\n  - id: b\n    requires: [{req}]\n    run: echo\n"),
        )
    };
    run_table(vec![
        requires("requires //a", "'//a'").says(&[
            "plans/p.yaml:6:16: phase `b`: requires `//a` does not name a phase: it has an empty segment",
        ]),
        requires("requires a trailing slash", "'/a/'")
            .says(&["plans/p.yaml:6:16: phase `b`: requires `/a/` does not name a phase: it ends with `/`"]),
        requires("requires an empty entry", "''")
            .says(&["plans/p.yaml:6:16: phase `b`: requires `` does not name a phase: the entry is empty"]),
        requires("requires the root", "/")
            .says(&["plans/p.yaml:6:16: phase `b`: requires `/` does not name a phase: `/` is the whole plan"]),
        requires("requires ..", "../a")
            .says(&["plans/p.yaml:6:16: phase `b`: requires `../a` does not name a phase: `..`"]),
        requires("requires with an empty segment inside", "'/g//a'")
            .says(&["plans/p.yaml:6:16: ", "empty segment"]),
    ]);
}

#[test]
fn set_file_values() {
    let p = "name: p\nparams:\n  v: {}\nphases:\n  - id: a\n    run: echo {{ v }}\n";
    let set_file =
        |name, arg: &'static str| procedure(name, p).args(&["start", "p", "--set-file", arg]);
    run_table(vec![
        // The example of the issue: it read 1.3 GB in 5 s and never stopped.
        set_file("a device that never ends", "v=/dev/zero").says(&[
            "--set-file v: /dev/zero is not a regular file",
            "give a regular file",
        ]),
        set_file("a directory", "v={dir}/plans").says(&["is a directory; give a regular file"]),
        set_file("a fifo", "v={dir}/fifo")
            .fifo("fifo")
            .says(&["fifo is not a regular file"]),
        set_file("a file over 1 MiB", "v={dir}/big")
            .file("big", vec![b'x'; 1024 * 1024 + 1])
            .says(&["--set-file v: ", "big is larger than 1 MiB"]),
        set_file("an empty key", "=x").says(&["--set-file `=x` has an empty parameter name"]),
        set_file("a blank key", " ={dir}/value")
            .file("value", "1")
            .says(&["has an empty parameter name"]),
        set_file("no equals sign", "v").says(&["--set-file `v` must have the form key=PATH"]),
        set_file("an empty path", "v=").says(&["--set-file v: the path is empty"]),
        set_file("a missing file", "v={dir}/nope").says(&["--set-file v: cannot read", "nope"]),
        set_file("a file that is not text", "v={dir}/bin")
            .file("bin", b"ok\xff\xfe".to_vec())
            .says(&["--set-file v: ", "is not UTF-8 text"]),
        procedure("set with an empty key", p)
            .args(&["start", "p", "--set", "=x"])
            .says(&["--set `=x` has an empty parameter name"]),
        procedure("set with a blank key", p)
            .args(&["start", "p", "--set", " =x"])
            .says(&["has an empty parameter name"]),
    ]);
}

#[test]
fn procedure_files() {
    run_table(vec![
        procedure("a second document", "name: p\nphases:\n  - id: a\n    run: echo\n---\nname: q\nphases: []\n")
            .says(&["plans/p.yaml:5:1: a second YAML document starts here"]),
        procedure("an empty second document", "name: p\nphases:\n  - id: a\n    run: echo\n---\n")
            .says(&["plans/p.yaml:5:1: a second YAML document"]),
        procedure("content after the end marker", "name: p\nphases:\n  - id: a\n    run: echo\n...\nname: q\n")
            .says(&["plans/p.yaml:6:1: a second YAML document"]),
        procedure("a second document inside block text", "name: p\nphases:\n  - id: a\n    run: |\n      echo\n---\n      echo\n")
            .says(&["plans/p.yaml:6:1: a second YAML document"]),
        // Found by the property test: a problem at the end of the input was placed on a line
        // after the last one.
        procedure("an unclosed list at the end of the file", "name: p\nphases: [")
            .says(&["plans/p.yaml:2:10: invalid YAML: "]),
        procedure("a zero timeout", "name: p\nphases:\n  - id: a\n    run: echo\n    timeout: 0s\n")
            .says(&["plans/p.yaml:5:14: phase `a`: timeout must be longer than zero, not `0s`"]),
        procedure("a zero timeout as a number", "name: p\nphases:\n  - id: a\n    run: echo\n    timeout: 0\n")
            .says(&["plans/p.yaml:5:14: phase `a`: timeout must be longer than zero, not `0`"]),
        procedure("a zero wait interval", "name: p\nphases:\n  - id: a\n    wait: {run: 'true', interval: 0ms}\n")
            .says(&["plans/p.yaml:4:35: wait.interval must be longer than zero"]),
        procedure("a zero wait timeout", "name: p\nphases:\n  - id: a\n    wait: {run: 'true', timeout: 0s}\n")
            .says(&["plans/p.yaml:4:34: wait.timeout must be longer than zero"]),
        procedure("a zero kube timeout", "name: p\nphases:\n  - id: a\n    kube: {wait_ready: {node: n, timeout: 0s}}\n")
            .says(&["plans/p.yaml:4:", "kube timeout must be longer than zero"]),
        procedure("a timeout below a millisecond", "name: p\nphases:\n  - id: a\n    run: echo\n    timeout: 0.0001\n")
            .says(&["plans/p.yaml:5:14: phase `a`: timeout must be longer than zero, not `0.0001`"]),
        procedure("a null default", "name: p\nparams:\n  v: {default: ~}\nphases:\n  - id: a\n    run: echo {{ v }}\n")
            .says(&["plans/p.yaml:3:16: parameter `v`: default `~` is null in YAML"]),
        procedure("a numeric id", "name: p\nphases:\n  - id: 42\n    run: echo\n")
            .says(&["plans/p.yaml:3:9: phase id must be a string, but `42` is a number in YAML"]),
        procedure("a boolean id", "name: p\nphases:\n  - id: true\n    run: echo\n")
            .says(&["plans/p.yaml:3:9: phase id must be a string, but `true` is a boolean in YAML"]),
        procedure("a null id", "name: p\nphases:\n  - id: ~\n    run: echo\n")
            .says(&["plans/p.yaml:3:9: phase id must be a string, but `~` is null in YAML"]),
        procedure("a float id", "name: p\nphases:\n  - id: 1.5\n    run: echo\n")
            .says(&["plans/p.yaml:3:9: phase id must be a string, but `1.5` is a number"]),
        procedure("a hexadecimal id", "name: p\nphases:\n  - id: 0x1f\n    run: echo\n")
            .says(&["plans/p.yaml:3:9: ", "is a number"]),
        procedure("a numeric name", "name: 7\nphases:\n  - id: a\n    run: echo\n")
            .says(&["plans/p.yaml:1:7: name must be a string, but `7` is a number in YAML"]),
        procedure("a list parameter with a single default", "name: p\nparams:\n  l: {type: list, default: a}\nphases:\n  - id: a\n    run: echo {{ l }}\n")
            .says(&["plans/p.yaml:3:28: parameter `l`: type is list but the default `a` is a single value"]),
        procedure("a string parameter with a list default", "name: p\nparams:\n  s:\n    type: string\n    default: [a, b]\nphases:\n  - id: a\n    run: echo {{ s }}\n")
            .says(&["plans/p.yaml:5:14: parameter `s`: type is string but the default is a list"]),
        procedure("as shadows a parameter", "name: p\nparams:\n  node: {}\nphases:\n  - id: a\n    foreach: [x, y]\n    as: node\n    run: echo {{ node }}\n")
            .says(&["plans/p.yaml:7:9: phase `a`: the foreach item `node` hides the parameter `node`"]),
        procedure("the default item shadows a parameter", "name: p\nparams:\n  item: {}\nphases:\n  - id: a\n    foreach: [x, y]\n    run: echo {{ item }}\n")
            .says(&["plans/p.yaml:6:14: phase `a`: the foreach item `item` hides the parameter `item`"]),
        procedure("as shadows an enclosing item", "name: p\nphases:\n  - id: a\n    foreach: [x, y]\n    as: n\n    phases:\n      - id: b\n        foreach: [u, v]\n        as: n\n        run: echo {{ n }}\n")
            .says(&["plans/p.yaml:9:13: phase `b`: the foreach item `n` hides the item of an enclosing foreach `n`"]),
        procedure("as shadows the inventory", "name: p\nphases:\n  - id: a\n    foreach: [x]\n    as: inventory\n    run: echo {{ inventory }}\n")
            .says(&["plans/p.yaml:5:9: ", "hides the built-in `inventory`"]),
        procedure("as shadows a capture", "name: p\nphases:\n  - id: f\n    run: echo\n    capture: {n: json.n}\n  - id: a\n    foreach: [x]\n    as: n\n    run: echo {{ n }}\n")
            .says(&["plans/p.yaml:8:9: the foreach item `n` hides the captured variable `n`"]),
        case("invalid UTF-8 on line 3")
            .plan("p.yaml", b"name: p\nphases:\n  - id: a\xff\n    run: echo\n".to_vec())
            .args(&["procedures", "show", "p"])
            .says(&["plans/p.yaml:3:10: the file is not valid UTF-8 (byte 0xff)"]),
        case("UTF-16")
            .plan("p.yaml", b"\xff\xfen\x00a\x00".to_vec())
            .args(&["start", "p"])
            .says(&["plans/p.yaml:1:1: the file is UTF-16 text; save it as UTF-8"]),
    ]);
}

#[test]
fn templates_that_can_never_render() {
    let run = |name, template: &'static str| {
        procedure(
            name,
            &format!(
                "name: p\nparams:\n  v: {{default: x}}\nphases:\n  - id: a\n    run: {template}\n"
            ),
        )
        .args(&["start", "p", "--dry-run"])
    };
    run_table(vec![
        run("integer division by zero", "echo {{ 1 // 0 }}")
            .says(&["plans/p.yaml:6:10: bad template: it uses no names, yet it can never render", "1 // 0"]),
        run("remainder by zero", "echo {{ 7 % (2 - 2) }}")
            .says(&["plans/p.yaml:6:10: bad template: it uses no names, yet it can never render"]),
        run("a constant that is not a number", "\"echo {{ 'a' - 1 }}\"")
            .says(&["plans/p.yaml:6:10: bad template: it uses no names"]),
        // Found by the property test: a multi-byte character inside a block panicked the
        // shell-placement check (a byte index inside the character).
        run("a multi-byte character inside a block", "\"echo {{\u{feff} v }} {%é %}\"")
            .says(&["plans/p.yaml:6:10: bad template: "]),
        run("include", "\"echo {% include 'x' %}\"")
            .says(&["plans/p.yaml:6:10: bad template: `{% include %}` can never render here"]),
        run("include with a name", "\"echo {% include v %}\"")
            .says(&["plans/p.yaml:6:10: bad template: `{% include %}` can never render here"]),
        run("extends", "\"{% extends 'base' %}\"")
            .says(&["bad template: `{% extends %}` can never render here"]),
        run("import", "\"{% import 'm' as m %}{{ m.x() }}\"")
            .says(&["bad template: `{% import %}` can never render here"]),
        run("from import", "\"{%- from 'm' import x %}{{ x() }}\"")
            .says(&["bad template: `{% from %}` can never render here"]),
        run("a recursive macro", "\"{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(v) }}\"")
            .says(&["plans/p.yaml:6:10: bad template: macro `f` calls itself (f → f)"]),
        run("mutually recursive macros", "\"{% macro f() %}{{ g() }}{% endmacro %}{% macro g() %}{{ f() }}{% endmacro %}{{ f() }}\"")
            .says(&["bad template: macro `f` calls itself (f → g → f)"]),
        procedure("a division by zero in a check", "name: p\nphases:\n  - id: a\n    check: {that: \"{{ 1 // 0 > 0 }}\"}\n")
            .says(&["plans/p.yaml:4:19: bad template: it uses no names, yet it can never render"]),
        procedure("a division by zero on a later line", "name: p\nphases:\n  - id: a\n    run: |\n      echo one\n      echo {{ 2 // 0 }}\n")
            .says(&["plans/p.yaml:6:", "can never render"]),
        procedure("include in a description", "name: p\nphases:\n  - id: a\n    description: \"{% include 'x' %}\"\n    run: echo\n")
            .says(&["plans/p.yaml:4:18: bad template: `{% include %}`"]),
    ]);
}

#[test]
fn captured_values_used_too_early() {
    run_table(vec![
        procedure("a capture of a later phase", "name: p\nphases:\n  - id: use\n    run: echo {{ x }}\n  - id: find\n    run: echo\n    capture: {x: json.x}\n")
            .says(&["plans/p.yaml:4:10: phase /use uses `x`, which /find captures, but not before /use runs"]),
        procedure("a capture of a parallel sibling", "name: p\nphases:\n  - id: g\n    parallel: true\n    phases:\n      - id: find\n        run: echo\n        capture: {x: json.x}\n      - id: use\n        when: \"{{ x > 1 }}\"\n        run: echo\n")
            .says(&["plans/p.yaml:10:15: phase /g/use uses `x`, which /g/find captures, but not before /g/use runs"]),
        procedure("a capture of the phase itself", "name: p\nphases:\n  - id: a\n    run: echo {{ x }}\n    capture: {x: json.x}\n")
            .says(&["plans/p.yaml:4:10: phase /a uses `x`, which /a captures"]),
        procedure("a capture of a later group in a rollback", "name: p\nphases:\n  - id: a\n    run: echo\n    rollback: {run: \"echo {{ x }}\"}\n  - id: g\n    phases:\n      - id: find\n        run: echo\n        capture: {x: json.x}\n")
            .says(&["plans/p.yaml:5:21: phase /a uses `x`, which /g/find captures"]),
        procedure("a capture inside a later foreach", "name: p\nphases:\n  - id: use\n    check: {that: \"{{ y }}\"}\n  - id: each\n    foreach: [m, n]\n    run: echo\n    capture: {y: json.y}\n")
            .says(&["phase /use uses `y`, which /each captures"]),
        procedure("a capture nobody makes", "name: p\nphases:\n  - id: a\n    run: echo {{ member }}\n")
            .says(&["plans/p.yaml:4:10: template uses undefined name `member`"]),
    ]);
}

/// A cluster.yaml with one node; `kubeconfig` is written as given.
fn inventory(kubeconfig: &str) -> String {
    format!("name: c\nnodes:\n  - {{name: n1, address: 127.0.0.1, roles: [worker]}}\nkubernetes:\n  kubeconfig: {kubeconfig}\n")
}

#[test]
fn inventories() {
    let maintenance = ["start", "node-maintenance", "--set", "node=n1", "--dry-run"];
    run_table(vec![
        case("a kubeconfig that does not exist")
            .file("cluster.yaml", inventory("./missing-kubeconfig"))
            .args(&maintenance)
            .says(&[
                "cluster.yaml:5:15: kubernetes.kubeconfig ",
                "missing-kubeconfig does not exist, and this plan has kube phases",
            ])
            .no_operation(),
        case("no kubeconfig anywhere")
            .file(
                "cluster.yaml",
                "name: c\nnodes:\n  - {name: n1, address: 127.0.0.1}\n",
            )
            .env("HOME", "/nonexistent-home")
            .unset("KUBECONFIG")
            .args(&maintenance)
            .says(&[
                "this plan has kube phases but there is no kubeconfig",
                "/nonexistent-home/.kube/config does not exist",
            ])
            .no_operation(),
        case("KUBECONFIG names a missing file")
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .args(&maintenance)
            .says(&["KUBECONFIG names /nonexistent/kubeconfig, which does not exist"])
            .no_operation(),
        case("an inventory that is not UTF-8")
            .file(
                "cluster.yaml",
                b"name: c\nnodes:\n  - {name: n\xe9}\n".to_vec(),
            )
            .args(&[
                "start",
                "etcd-remove-member",
                "--set",
                "node=n1",
                "--dry-run",
            ])
            .says(&["cluster.yaml:3:13: the file is not valid UTF-8 (byte 0xe9)"])
            .no_operation(),
        case("a broken inventory for a plan that needs one")
            .file("cluster.yaml", "nodes: [\n")
            .args(&[
                "start",
                "etcd-remove-member",
                "--set",
                "node=n1",
                "--dry-run",
            ])
            .says(&["inventory: ", "invalid YAML"])
            .no_operation(),
    ]);
}

/// What stays accepted next to the refusals above.
#[test]
fn accepted_neighbours() {
    let ok = |name| case(name).code(0);
    run_table(vec![
        on_operation("rollback of the root spelled out", &["plan", "rollback", "--phase=/", "--dry-run"])
            .code(0),
        on_operation("execute without the leading slash", &["plan", "execute", "--phase=g/b"])
            .history_may_change()
            .code(0)
            .prints(&["/g/b"]),
        on_operation("logs of a phase", &["plan", "logs", "--phase=/g/b"])
            .code(0)
            .prints(&["/g/b [out] b"]),
        ok("an empty MEDIC_STATE_DIR is unset")
            .env("MEDIC_STATE_DIR", "")
            .args(&["operations"])
            .prints(&["no state directory at ./state"])
            .lacks(&["a value is required"]),
        ok("an empty MEDIC_PLANS_DIR is unset")
            .env("MEDIC_PLANS_DIR", "")
            .args(&["procedures"])
            .prints(&["local-preflight"])
            .lacks(&["a value is required"]),
        ok("an empty MEDIC_INVENTORY is unset")
            .env("MEDIC_INVENTORY", "")
            .args(&["start", "local-preflight", "--dry-run"])
            .prints(&["would run"]),
        // The default drill directory is used (there is no drill in it).
        case("an empty MEDIC_DRILL_DIR is unset")
            .code(1)
            .env("MEDIC_DRILL_DIR", "")
            .args(&["drill", "status"])
            .says(&["state/drill/drill.lock"])
            .lacks(&["a value is required"]),
        // The example: a broken cluster.yaml blocked a procedure that needs none.
        ok("a broken inventory for local-preflight")
            .file("cluster.yaml", "nodes: [\n")
            .args(&["start", "local-preflight", "--dry-run"])
            .prints(&["would run"])
            .says(&["note: ignoring the inventory ./cluster.yaml"]),
        ok("a broken inventory when resuming local-preflight")
            .file("cluster.yaml", "nodes: [\n")
            .setup(&["start", "local-preflight", "--manual"])
            .args(&["plan", "resume"])
            .lacks(&["inventory: "]),
        ok("a quoted numeric id")
            .plan("p.yaml", "name: p\nphases:\n  - id: \"42\"\n    run: echo\n")
            .args(&["start", "p", "--dry-run"])
            .prints(&["/42"]),
        ok("a zero retry delay")
            .plan("p.yaml", "name: p\nphases:\n  - id: a\n    run: echo\n    retries: 2\n    retry_delay: 0s\n")
            .args(&["start", "p", "--dry-run"]),
        ok("a leading document marker and an end marker")
            .plan("p.yaml", "# c\n---\nname: p\nphases:\n  - id: a\n    run: echo\n...\n# end\n")
            .args(&["start", "p", "--dry-run"]),
        ok("a list parameter with a list default")
            .plan("p.yaml", "name: p\nparams:\n  l: {type: list, default: [a]}\nphases:\n  - id: a\n    run: echo {{ l }}\n")
            .args(&["start", "p", "--dry-run"]),
        ok("a template with names that divides")
            .plan("p.yaml", "name: p\nparams:\n  n: {default: '2'}\nphases:\n  - id: a\n    run: echo {{ 4 // (n | int) }}\n")
            .args(&["start", "p", "--dry-run"])
            .prints(&["echo 2"]),
        ok("a macro that calls another")
            .plan("p.yaml", "name: p\nphases:\n  - id: a\n    run: \"{% macro g() %}x{% endmacro %}{% macro f() %}{{ g() }}{% endmacro %}echo {{ f() }}\"\n")
            .args(&["start", "p", "--dry-run"]),
        ok("captures of earlier, required and own phases")
            .plan("p.yaml", "name: p\nphases:\n  - id: find\n    run: echo\n    capture: {x: json.x}\n  - id: g\n    parallel: true\n    phases:\n      - id: c\n        run: echo\n        capture: {y: json.y}\n      - id: d\n        requires: [c]\n        run: echo {{ x }} {{ y }}\n        capture: {z: json.z}\n        rollback: {run: \"echo {{ z }}\"}\n")
            .args(&["procedures", "show", "p"]),
        ok("every shipped procedure still loads")
            .args(&["procedures"])
            .lacks(&["invalid"]),
    ]);
}

/// At run time an undefined name is named: a value whose capturing phase was skipped.
#[test]
fn undefined_name_at_run_time_is_named() {
    let env = Env::new();
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: find\n    when: \"{{ false }}\"\n    run: echo\n    capture: {member: json.id}\n  - id: use\n    run: echo {{ member }}\n",
    );
    let out = run_bounded(env.medic(&["start", "p"])).no_panic().code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("/use failed") && all.contains("`member` is not defined here"),
        "{all}"
    );
}

/// Procedure and inventory files are read only when they are regular files of at most 4 MiB: a
/// plans entry or inventory that is a device or a FIFO answers at once instead of reading
/// forever or blocking.
#[test]
fn procedure_and_inventory_files_that_are_not_regular_files_are_refused() {
    let env = Env::new();
    env.procedure("p", "name: p\nphases:\n  - id: a\n    run: \"true\"\n");
    let plans = env.path().join("plans");
    std::os::unix::fs::symlink("/dev/zero", plans.join("zero.yaml")).unwrap();
    let fifo = |path: &std::path::Path| {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    };
    fifo(&plans.join("fifo.yaml"));
    let listed = run_bounded(env.medic(&["procedures"])).no_panic().code(0);
    assert!(
        listed.stdout.contains("zero") && listed.stdout.contains("invalid"),
        "{}",
        listed.stdout
    );
    for name in ["zero", "fifo"] {
        let out = run_bounded(env.medic(&["start", name, "--dry-run"]))
            .no_panic()
            .code(2);
        assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    }
    std::fs::write(plans.join("big.yaml"), vec![b'#'; 5 * 1024 * 1024]).unwrap();
    let out = run_bounded(env.medic(&["start", "big", "--dry-run"]))
        .no_panic()
        .code(2);
    assert!(out.stderr.contains("larger than 4 MiB"), "{}", out.stderr);
    // An inventory that is a device or a FIFO: a plan that needs none still runs, one that
    // needs it is refused with the reason.
    fifo(&env.file("inv.yaml"));
    env.procedure(
        "s",
        "name: s\nphases:\n  - id: a\n    ssh: {on: n1, run: \"true\"}\n",
    );
    for inventory in [
        "/dev/zero".to_string(),
        env.file("inv.yaml").display().to_string(),
    ] {
        run_bounded(
            env.medic(&["start", "p", "--dry-run"])
                .env("MEDIC_INVENTORY", &inventory),
        )
        .no_panic()
        .code(0);
        let out = run_bounded(
            env.medic(&["start", "s", "--dry-run"])
                .env("MEDIC_INVENTORY", &inventory),
        )
        .no_panic()
        .code(2);
        assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    }
}
