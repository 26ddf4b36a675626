//! Malformed procedures and bad parameters, run through the real binary.
//!
//! Every case must exit 2, name the problem precisely on stderr (with `file:line:column` where the
//! message has a location) and never panic. Cases are tables; a failing case is reported by name
//! and the table goes on, so one run shows every failing case.
//!
//! Cases marked "Regression" once failed; they keep the fixed behaviour in place.

mod common;

use common::Env;

/// One malformed input and what medic must say about it.
struct Case {
    name: &'static str,
    /// Files written to `plans/` before running: (file name, contents).
    files: Vec<(String, Vec<u8>)>,
    /// Commands run first, each of which must succeed (e.g. creating an operation).
    setup: Vec<Vec<&'static str>>,
    args: Vec<&'static str>,
    code: i32,
    /// Fragments that must all appear on stderr.
    expect: Vec<&'static str>,
    /// Fragments that must appear on neither stdout nor stderr.
    lacks: Vec<&'static str>,
    /// Whether to check that no operation was left behind.
    no_operation: bool,
}

/// A case for `plans/p.yaml` run with `medic start p`.
fn case(name: &'static str, yaml: impl Into<String>) -> Case {
    Case {
        name,
        files: vec![("p.yaml".to_string(), yaml.into().into_bytes())],
        setup: Vec::new(),
        args: vec!["start", "p"],
        code: 2,
        expect: Vec::new(),
        lacks: Vec::new(),
        no_operation: false,
    }
}

impl Case {
    fn args(mut self, args: &[&'static str]) -> Self {
        self.args = args.to_vec();
        self
    }

    fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    fn setup(mut self, args: &[&'static str]) -> Self {
        self.setup.push(args.to_vec());
        self
    }

    fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    fn expect(mut self, fragments: &[&'static str]) -> Self {
        self.expect.extend_from_slice(fragments);
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

    fn check(&self) {
        let env = Env::new();
        for (name, contents) in &self.files {
            std::fs::write(env.path().join("plans").join(name), contents).unwrap();
        }
        for args in &self.setup {
            env.medic(args).run().no_panic().code(0);
        }
        let mut out = env.medic(&self.args).run().no_panic().code(self.code);
        for fragment in &self.expect {
            out = out.stderr_contains(fragment);
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
            let list = env.medic(&["operations", "-o", "json"]).run().code(0);
            assert_eq!(
                list.json()["operations"],
                serde_json::json!([]),
                "a failed `{}` left an operation behind",
                self.args.join(" ")
            );
        }
    }
}

/// Runs every case, then fails once, naming each case that failed.
fn run_table(cases: Vec<Case>) {
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case name {:?} used twice", c.name);
    }
    common::run_table(&cases, |c| c.name, |c| c.check());
}

/// Groups nested `depth` levels deep, with one leaf at the bottom.
fn deeply_nested(depth: usize) -> String {
    let mut yaml = String::from("name: p\nphases:\n");
    for level in 0..depth {
        let indent = "    ".repeat(level);
        yaml.push_str(&format!("{indent}  - id: g{level}\n{indent}    phases:\n"));
    }
    let indent = "    ".repeat(depth);
    yaml.push_str(&format!("{indent}  - id: leaf\n{indent}    run: echo\n"));
    yaml
}

#[test]
fn procedure_structure() {
    run_table(vec![
        case(
            "yaml syntax error",
            "name: p\nphases:\n  - id: a\n    run: echo: x\n",
        )
        .expect(&["plans/p.yaml:4:14: invalid YAML: mapping values are not allowed in this context"])
        .no_operation(),
        case(
            "yaml unclosed quote",
            "name: p\nphases:\n  - id: a\n    run: \"echo hi\n  - id: b\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:4:10: invalid YAML: "]),
        // Regression (was a bug): the YAML scanner's position is where the scalar `a` began (3:9), but the tab is
        // the first character of line 4; the operator is sent to a line without a tab.
        case(
            "tab indentation",
            "name: p\nphases:\n  - id: a\n\trun: echo\n",
        )
        .expect(&["plans/p.yaml:4:1: invalid YAML: ", "found a tab"]),
        case("top level is a list", "- a\n- b\n").expect(&[
            "plans/p.yaml:1:1: a procedure must be a mapping with name, description, params and phases",
        ]),
        case(
            "duplicate top-level key",
            "name: p\nname: p\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:2:1: duplicate key `name` (first at line 1)"]),
        case(
            "yaml anchors",
            "name: p\nphases:\n  - id: a\n    run: &x echo\n  - id: b\n    run: *x\n",
        )
        .expect(&["plans/p.yaml:4:13: YAML anchors and aliases are not supported"]),
        // Regression (was a bug): block-mapping positions point at the colon after the mapping's first key (1:12
        // here) instead of the start of the mapping (1:1). The same wrong column shows for every
        // message about a whole block mapping (missing keys, phase location, cycles).
        case(
            "missing name",
            "description: x\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:1:1: the procedure needs `name:`"]),
        case(
            "name does not match file",
            "name: q\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:1:7: procedure name `q` does not match its file name; rename one so both are `p`",
        ]),
        case(
            "name is a list",
            "name: [p]\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:1:7: name must be a single value, not a list"]),
        case(
            "unknown top-level key",
            "name: p\ndescripton: x\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:2:1: unknown key `descripton` in the procedure; did you mean `description`?",
        ]),
        // Regression (was a bug): block-mapping column (1:5 is the colon after `name`; the mapping starts at 1:1).
        case("missing phases", "name: p\ndescription: x\n")
            .expect(&["plans/p.yaml:1:1: the procedure needs `phases:`, a list of phases"]),
        case("phases is a scalar", "name: p\nphases: nope\n")
            .expect(&["plans/p.yaml:2:9: phases must be a list (each item starts with `- id:`)"]),
        // Regression (was a bug): block-mapping column (3:6 is the colon after `run`; the mapping starts at 3:3).
        case("phases is a mapping", "name: p\nphases:\n  run: echo\n")
            .expect(&["plans/p.yaml:3:3: phases must be a list (each item starts with `- id:`)"]),
        // Regression (was a bug): an empty top-level `phases: []` is accepted (exit 0, an operation is created that
        // does nothing) while an empty nested `phases:` is rejected.
        case("empty phases list", "name: p\nphases: []\n")
            .expect(&["plans/p.yaml:2:9: ", "empty `phases:` list"])
            .no_operation(),
        // Regression (was a bug): a UTF-8 byte-order mark (which YAML allows, and some editors write) becomes part of
        // the first key: "unknown key `\u{feff}name`" plus a bogus "needs `name:`".
        case(
            "byte order mark",
            "\u{feff}name: p\nphases:\n  - id: a\n    requries: []\n    run: echo\n",
        )
        .expect(&[
            "1 problem found",
            "plans/p.yaml:4:5: unknown key `requries` in a phase; did you mean `requires`?",
        ]),
    ]);
}

#[test]
fn phases() {
    run_table(vec![
        case("phase is a scalar", "name: p\nphases:\n  - a\n")
            .expect(&["plans/p.yaml:3:5: a phase must be a mapping with the keys id, description"]),
        // Regression (was a bug): block-mapping column (3:16 is the colon after `description`).
        case(
            "phase without id",
            "name: p\nphases:\n  - description: no id\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:3:5: every phase needs an `id:`"]),
        case(
            "bad id characters",
            "name: p\nphases:\n  - id: Bad/Id\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:3:9: phase id `Bad/Id` must be lowercase letters, digits, `-`, `_` or `.` (no `/`)",
        ]),
        case(
            "duplicate sibling ids",
            "name: p\nphases:\n  - id: a\n    run: echo 1\n  - id: a\n    run: echo 2\n",
        )
        .expect(&["plans/p.yaml:5:9: duplicate phase id `a` (first defined at line 3)"]),
        case(
            "unknown phase key",
            "name: p\nphases:\n  - id: a\n    run: echo hi\n  - id: b\n    requries: [a]\n    run: echo x\n",
        )
        .expect(&[
            "1 problem found",
            "plans/p.yaml:6:5: unknown key `requries` in a phase; did you mean `requires`?",
        ]),
        case(
            "two actions",
            "name: p\nphases:\n  - id: a\n    run: echo\n    check: \"{{ true }}\"\n",
        )
        .expect(&[
            "plans/p.yaml:5:5: phase `a` has more than one action (run, check); split it into one phase per action",
        ]),
        case(
            "phases and an action",
            "name: p\nphases:\n  - id: a\n    phases:\n      - id: b\n        run: echo\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:7:5: phase `a` has both `phases:` and an action (`run`); a phase is either a group or does one thing",
        ]),
        // Regression (was a bug): block-mapping column (3:7 is the colon after `id`; the phase starts at 3:5).
        case(
            "neither phases nor action",
            "name: p\nphases:\n  - id: a\n    description: nothing here\n",
        )
        .expect(&["plans/p.yaml:3:5: phase `a` needs an action (run, ssh, etcd, kube, check, pause, wait, ssh_host_key) or `phases:`"]),
        case(
            "empty nested phases",
            "name: p\nphases:\n  - id: g\n    phases: []\n",
        )
        .expect(&["plans/p.yaml:4:13: phase `g` has an empty `phases:` list"]),
        case(
            "bad duration in timeout",
            "name: p\nphases:\n  - id: a\n    run: echo\n    timeout: soon\n",
        )
        .expect(&[
            "plans/p.yaml:5:14: phase `a`: timeout must be a duration such as 30s, 10m or 1h, not `soon`",
        ]),
        // Regression (was a bug): `timeout: 1e300` passes validation (a dry run shows "584542046090years") and
        // `start` then panics in Duration::from_secs_f64 (engine.rs attempt_with_retries; the
        // same for wait.timeout/interval in wait.rs and retry_delay), exit 101, leaving the
        // operation behind. It must be refused at load.
        case(
            "timeout too large",
            "name: p\nphases:\n  - id: a\n    run: echo hi\n    timeout: 1e300\n",
        )
        .expect(&["plans/p.yaml:5:14: phase `a`: timeout"])
        .no_operation(),
        case(
            "retries not a number",
            "name: p\nphases:\n  - id: a\n    run: echo\n    retries: three\n",
        )
        .expect(&[
            "plans/p.yaml:5:14: phase `a`: retries must be a whole number such as 3, not `three`",
        ]),
        // Regression (was a bug): `retries: 1000` is silently cut to 100 (`.min(100)` in read_phase); the
        // procedure runs with a value other than the one written. It should be refused.
        case(
            "retries too many",
            "name: p\nphases:\n  - id: a\n    run: echo\n    retries: 1000\n",
        )
        .expect(&["plans/p.yaml:5:14: phase `a`: retries"])
        .no_operation(),
        case(
            "idempotent not a bool",
            "name: p\nphases:\n  - id: a\n    run: echo\n    idempotent: sometimes\n",
        )
        .expect(&["plans/p.yaml:5:17: phase `a`: idempotent must be true or false, not `sometimes`"]),
        case(
            "parallel not a bool",
            "name: p\nphases:\n  - id: g\n    parallel: maybe\n    phases:\n      - id: a\n        run: echo\n",
        )
        .expect(&["plans/p.yaml:4:15: phase `g`: parallel must be true or false, not `maybe`"]),
        case(
            "parallel on a leaf",
            "name: p\nphases:\n  - id: a\n    parallel: true\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:4:15: phase `a`: `parallel:` applies to a group (`phases:` or `foreach:`)",
        ]),
        case(
            "max_parallel without parallel",
            "name: p\nphases:\n  - id: g\n    max_parallel: 2\n    phases:\n      - id: a\n        run: echo\n",
        )
        .expect(&["plans/p.yaml:4:19: phase `g`: max_parallel needs `parallel: true`"]),
        case(
            "max_parallel zero",
            "name: p\nphases:\n  - id: g\n    parallel: true\n    max_parallel: 0\n    phases:\n      - id: a\n        run: echo\n",
        )
        .expect(&["plans/p.yaml:5:19: phase `g`: max_parallel must be at least 1"]),
        case(
            "as without foreach",
            "name: p\nphases:\n  - id: a\n    as: node\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:4:9: phase `a`: `as:` only names the item of a `foreach:`"]),
        // Regression (was a bug): block-mapping column (3:7); the phase starts at 3:5. Found when the plan is built.
        case(
            "foreach is not a list",
            "name: p\nphases:\n  - id: a\n    foreach: \"{{ 5 }}\"\n    run: echo\n",
        )
        .args(&["start", "p", "--dry-run"])
        .expect(&["plans/p.yaml:3:5: phase `a`: foreach must give a list, got 5"]),
        // Regression (was a bug): 1000 nested groups overflow the stack in the recursive read_phase/read_phases
        // (SIGABRT, exit 134, "has overflowed its stack"); medic should refuse the nesting depth.
        case("phases nested too deeply", deeply_nested(1000))
            .args(&["procedures", "show", "p"])
            .expect(&["plans/p.yaml:"]),
    ]);
}

#[test]
fn requires_and_templates() {
    run_table(vec![
        case(
            "unknown requires",
            "name: p\nphases:\n  - id: alpha\n    run: echo\n  - id: beta\n    requires: [alpah]\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:6:16: phase /beta requires unknown phase `alpah`; did you mean `/alpha`?",
        ]),
        case(
            "unknown nested requires",
            "name: p\nphases:\n  - id: a\n    run: echo\n  - id: b\n    phases:\n      - id: c\n        run: echo\n  - id: d\n    requires: [/b/cc]\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:10:16: phase /d requires unknown phase `/b/cc`; did you mean `/b/c`?",
        ]),
        case(
            "requires itself",
            "name: p\nphases:\n  - id: a\n    requires: [a]\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:4:16: phase /a requires itself"]),
        // Regression (was a bug): the message is right; the location has the block-mapping column (6:11 is the
        // colon after `id`; phase /g/a starts at 6:9).
        case(
            "requires cycle",
            "name: p\nphases:\n  - id: g\n    parallel: true\n    phases:\n      - id: a\n        requires: [b]\n        run: echo\n      - id: b\n        requires: [a]\n        run: echo\n",
        )
        .expect(&[
            "1 problem found",
            "requires cycle: /g/a → /g/b → /g/a (a phase cannot wait for itself, its own group, or anything waiting for it)",
            "plans/p.yaml:6:9: requires cycle",
        ])
        .no_operation(),
        case(
            "requires inside a foreach",
            "name: p\nphases:\n  - id: a\n    foreach: [x, y]\n    phases:\n      - id: inner\n        run: echo\n  - id: b\n    requires: [/a/inner]\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:9:16: phase /b requires /a/inner, which is inside a foreach; require the foreach phase itself",
        ]),
        case(
            "template syntax error",
            "name: p\nphases:\n  - id: a\n    run: echo {{ oops\n",
        )
        .expect(&[
            "plans/p.yaml:4:10: bad template: syntax error: unexpected end of input, expected end of variable block",
        ]),
        case(
            "template syntax error on a later line",
            "name: p\nphases:\n  - id: a\n    run: |\n      echo {{ one\n      echo two\n",
        )
        .expect(&["plans/p.yaml:6:7: bad template: syntax error: "]),
        case(
            "template undefined name",
            "name: p\nparams:\n  node: {}\nphases:\n  - id: a\n    run: echo {{ nod }}\n",
        )
        .expect(&["plans/p.yaml:6:10: template uses undefined name `nod`; did you mean `node`?"]),
        case(
            "template undefined name without a close one",
            "name: p\nphases:\n  - id: a\n    description: each {{ item }}\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:4:18: template uses undefined name `item`; declare it under `params:` or capture it in an earlier phase",
        ]),
        // Regression (was a bug): an unknown filter passes the load-time template check; the dry run exits 0 saying
        // "cannot render yet (render `run`: unknown filter ...)" as if it were a value captured
        // later, and `start` fails at the phase (exit 1) after creating the operation.
        case(
            "template unknown filter",
            "name: p\nparams:\n  nodes: {default: [a]}\nphases:\n  - id: a\n    run: echo {{ nodes | lenght }}\n",
        )
        .args(&["start", "p", "--dry-run"])
        .expect(&["plans/p.yaml:6:10: ", "unknown filter"]),
        case(
            "parameter and capture share a name",
            "name: p\nparams:\n  x: {}\nphases:\n  - id: a\n    run: echo\n    capture:\n      x: json.x\n",
        )
        .expect(&["plans/p.yaml:3:3: `x` is both a parameter and a captured variable; rename one"]),
    ]);
}

#[test]
fn actions() {
    run_table(vec![
        // Regression (was a bug): block-mapping column (5:8 is the colon after `x`; the mapping starts at 5:7).
        case(
            "capture on a group",
            "name: p\nphases:\n  - id: g\n    capture:\n      x: json.x\n    phases:\n      - id: a\n        run: echo\n",
        )
        .expect(&["plans/p.yaml:5:7: phase `g`: only a phase with an action can `capture:` its result"]),
        case(
            "capture not a mapping",
            "name: p\nphases:\n  - id: a\n    run: echo\n    capture: json.x\n",
        )
        .expect(&[
            "plans/p.yaml:5:14: phase `a`: capture must map names to expressions over the result",
        ]),
        case(
            "capture bad expression",
            "name: p\nphases:\n  - id: a\n    run: echo\n    capture:\n      x: json.x +\n",
        )
        .expect(&["plans/p.yaml:6:10: phase `a`: capture `x`: syntax error"]),
        // Regression (was a bug): block-mapping column (6:10 is the colon after `run`; the mapping starts at 6:7).
        case(
            "rollback with two actions",
            "name: p\nphases:\n  - id: a\n    run: echo\n    rollback:\n      run: echo undo\n      pause: hmm\n",
        )
        .expect(&[
            "plans/p.yaml:6:7: phase `a`: rollback must have exactly one action (run, ssh, etcd, kube, check, pause, wait, ssh_host_key)",
        ]),
        case(
            "rollback with an unknown action",
            "name: p\nphases:\n  - id: a\n    run: echo\n    rollback:\n      exec: echo undo\n",
        )
        .expect(&[
            "1 problem found",
            "plans/p.yaml:6:7: unknown key `exec` in phase `a` rollback; expected one of run, ssh, etcd, kube, check, pause, wait",
        ]),
        case(
            "rollback on a group",
            "name: p\nphases:\n  - id: g\n    rollback: {run: echo}\n    phases:\n      - id: a\n        run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:4:15: phase `g`: `rollback:` belongs on the leaf phases of a group, not the group",
        ]),
        // Regression (was a bug): block-mapping column (5:14 is the colon after `message`; the mapping is at 5:7).
        case(
            "check without that",
            "name: p\nphases:\n  - id: a\n    check:\n      message: nope\n",
        )
        .expect(&["plans/p.yaml:5:7: check needs `that:`, the condition that must hold"]),
        case(
            "check unknown key",
            "name: p\nphases:\n  - id: a\n    check: {that: \"{{ true }}\", mesage: x}\n",
        )
        .expect(&["plans/p.yaml:4:33: unknown key `mesage` in check; did you mean `message`?"]),
        case(
            "wait without run",
            "name: p\nphases:\n  - id: a\n    wait: {timeout: 10s}\n",
        )
        .expect(&["plans/p.yaml:4:11: wait needs `run:`, the command that must succeed"]),
        case(
            "wait bad interval",
            "name: p\nphases:\n  - id: a\n    wait: {run: \"true\", interval: often}\n",
        )
        .expect(&[
            "plans/p.yaml:4:35: wait.interval must be a duration such as 30s, 10m or 1h, not `often`",
        ]),
        // Regression (was a bug): an empty `run:` is reported on the line after it (5:5, where `timeout` is), not
        // on line 4 where `run:` is.
        case(
            "run without a command",
            "name: p\nphases:\n  - id: a\n    run:\n    timeout: 5s\n",
        )
        .expect(&["plans/p.yaml:4:", "run needs a command"])
        .lacks(&["plans/p.yaml:5:"]),
    ]);
}

#[test]
fn parameter_declarations() {
    run_table(vec![
        case(
            "params not a mapping",
            "name: p\nparams: [a, b]\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:2:9: params must be a mapping of parameter name to its settings"]),
        case(
            "param bad regex pattern",
            "name: p\nparams:\n  port:\n    pattern: \"[0-9\"\nphases:\n  - id: a\n    run: echo {{ port }}\n",
        )
        .expect(&[
            "plans/p.yaml:4:14: parameter `port`: pattern is not a valid regular expression: ",
            "unclosed character class",
        ]),
        case(
            "param unknown key",
            "name: p\nparams:\n  port:\n    requried: true\nphases:\n  - id: a\n    run: echo {{ port }}\n",
        )
        .expect(&["plans/p.yaml:4:5: unknown key `requried` in parameter `port`; did you mean `required`?"]),
        case(
            "param unknown type",
            "name: p\nparams:\n  port:\n    type: number\nphases:\n  - id: a\n    run: echo {{ port }}\n",
        )
        .expect(&["plans/p.yaml:4:11: parameter `port`: type must be string or list, not `number`"]),
        case(
            "param bad name",
            "name: p\nparams:\n  my-param: {}\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:3:3: parameter name `my-param` must be letters, digits and _ (starting with a letter)",
        ]),
        case(
            "param required not a bool",
            "name: p\nparams:\n  x:\n    required: yes please\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:4:15: parameter `x`: required must be true or false, not `yes please`"]),
        case(
            "param default is a mapping",
            "name: p\nparams:\n  x:\n    default: {a: 1}\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:4:14: parameter `x`: default must be a value or a list"]),
        case(
            "secret list param",
            "name: p\nparams:\n  t: {secret: true, type: list}\nphases:\n  - id: a\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:3:6: parameter `t`: a secret parameter must be a string"]),
    ]);
}

/// A good procedure with a required patterned parameter and a required secret one.
const PARAMS: &str = "name: p
params:
  node:
    description: node to drain
    required: true
    pattern: \"^[a-z0-9-]+$\"
  token:
    secret: true
    required: true
    pattern: \"^[a-f0-9]{8}$\"
  nodes:
    type: list
    default: [w-1]
    pattern: \"^w-[0-9]+$\"
phases:
  - id: a
    run: echo {{ node }} {{ token }} {{ nodes }}
";

#[test]
fn set_values() {
    run_table(vec![
        case("unknown parameter", PARAMS)
            .args(&["start", "p", "--set", "node=a", "--set", "token=deadbeef", "--set", "nodd=x"])
            .expect(&["1 problem found", "unknown parameter `nodd` for procedure p; did you mean `node`?"])
            .no_operation(),
        case(
            "parameter for a procedure without any",
            "name: p\nphases:\n  - id: a\n    run: echo\n",
        )
        .args(&["start", "p", "--set", "x=1"])
        .expect(&["unknown parameter `x` for procedure p; it takes no parameters"]),
        case("missing required parameter", PARAMS)
            .args(&["start", "p", "--set", "token=deadbeef"])
            .expect(&[
                "1 problem found",
                "plans/p.yaml:3:3: missing required parameter `node` (node to drain); pass --set node=VALUE",
            ])
            .no_operation(),
        case("value not matching pattern", PARAMS)
            .args(&["start", "p", "--set", "node=BAD_NODE", "--set", "token=deadbeef"])
            .expect(&[
                "1 problem found",
                "plans/p.yaml:3:3: parameter `node`: `BAD_NODE` does not match the pattern ^[a-z0-9-]+$",
            ]),
        case("list item not matching pattern", PARAMS)
            .args(&[
                "start", "p", "--dry-run", "--set", "node=a", "--set", "token=deadbeef", "--set",
                "nodes=w-1,x-2",
            ])
            .expect(&["plans/p.yaml:11:3: parameter `nodes`: `x-2` does not match the pattern ^w-[0-9]+$"]),
        case("set without equals", PARAMS)
            .args(&["start", "p", "--set", "node", "--set", "token=deadbeef"])
            .expect(&["--set `node` has no `=`; it must have the form key=value"]),
        case("set twice", PARAMS)
            .args(&["start", "p", "--set", "node=a", "--set", "node=b", "--set", "token=deadbeef"])
            .expect(&["1 problem found", "parameter `node` is set more than once"]),
        case("secret failing its pattern", PARAMS)
            .args(&["start", "p", "--set", "node=a", "--set", "token=hunter2"])
            .expect(&[
                "1 problem found",
                "plans/p.yaml:7:3: parameter `token`: the given value does not match the pattern ^[a-f0-9]{8}$",
            ])
            .lacks(&["hunter2"])
            .no_operation(),
        case("secret failing its pattern, json output", PARAMS)
            .args(&["start", "p", "-o", "json", "--set", "node=a", "--set", "token=hunter2"])
            .lacks(&["hunter2"]),
        // Regression (was a bug): `--set token:hunter2` (wrong separator) echoes the secret value in
        // "--set `token:hunter2` must have the form key=value"; redact_set only redacts `k=v`.
        case("secret with the wrong separator", PARAMS)
            .args(&["start", "p", "--set", "node=a", "--set", "token:hunter2"])
            .expect(&["must have the form key=value"])
            .lacks(&["hunter2"]),
        // Regression (was a bug): `--set =x` says "unknown parameter `` for procedure p; ..." instead of naming the
        // argument that has no parameter name.
        case("set with an empty name", PARAMS)
            .args(&["start", "p", "--set", "node=a", "--set", "token=deadbeef", "--set", "=x"])
            .expect(&["--set `=x`"]),
        // Regression (was a bug): an optional parameter with a pattern and no default that is not given is checked
        // as the empty string: "parameter `zone`: `` does not match the pattern ..." (for a
        // secret: "the given value does not match", though nothing was given). Only `node` is
        // wrong here.
        case(
            "optional patterned parameter left unset",
            "name: p\nparams:\n  node: {required: true, pattern: \"^[a-z]+$\"}\n  zone: {pattern: \"^[a-z]+-[0-9]$\"}\n  key: {secret: true, pattern: \"^[a-f0-9]{8}$\"}\nphases:\n  - id: a\n    run: echo {{ node }} {{ zone }} {{ key }}\n",
        )
        .args(&["start", "p", "--set", "node=BAD"])
        .expect(&["1 problem found", "plans/p.yaml:3:3: parameter `node`: `BAD` does not match"])
        .lacks(&["`zone`", "`key`"]),
        case("several --set problems at once", PARAMS)
            .args(&["start", "p", "--set", "nod=a", "--set", "token=xyz"])
            .expect(&[
                "3 problems found",
                "unknown parameter `nod` for procedure p; did you mean `node`?",
                "plans/p.yaml:3:3: missing required parameter `node`",
                "plans/p.yaml:7:3: parameter `token`: the given value does not match",
            ])
            .lacks(&["xyz"])
            .no_operation(),
    ]);
}

#[test]
fn command_line() {
    let good = "name: p\nphases:\n  - id: check-disk\n    run: echo\n";
    run_table(vec![
        case("unknown procedure", good)
            .args(&["start", "q"])
            .expect(&[
                "unknown procedure `q` (did you mean `p`?)",
                "run `medic procedures` to list them",
            ])
            .no_operation(),
        case("unknown procedure in show", good)
            .args(&["procedures", "show", "pp"])
            .expect(&["unknown procedure `pp` (did you mean `p`?)"]),
        case("start without a procedure", good)
            .args(&["start"])
            .expect(&[
                "the following required arguments were not provided",
                "<NAME>",
            ]),
        case("unknown phase", good)
            .setup(&["start", "p", "--manual"])
            .args(&["plan", "execute", "--phase", "/check-dsik"])
            .expect(&[
                "no phase /check-dsik in operation",
                "did you mean /check-disk?",
            ]),
        case("unreadable procedure file", good)
            .file("junk.yaml", b"\xff\xfe name: junk".to_vec())
            .args(&["procedures", "show", "junk"])
            .expect(&["plans/junk.yaml:1:1: the file is UTF-16 text; save it as UTF-8"]),
        // Regression (was a bug): one unreadable file in the plans directory breaks every command that loads any
        // procedure ("error: read procedure .../junk.yaml: stream did not contain valid UTF-8",
        // exit 2), although `p` itself is fine.
        case("unreadable file does not break other procedures", good)
            .file("junk.yaml", b"\xff\xfe name: junk".to_vec())
            .args(&["start", "p", "--dry-run"])
            .code(0),
        // Regression (was a bug): `p.yaml` and `p.yml` both define `p`; one silently wins (read_dir order). This
        // should be refused, naming both files.
        case("same procedure in .yaml and .yml", good)
            .file("p.yml", "name: p\nphases:\n  - id: other\n    run: echo\n")
            .args(&["procedures", "show", "p"])
            .expect(&["plans/p.yaml", "plans/p.yml"]),
        case(
            "show reports problems like start",
            "name: p\nphases:\n  - id: a\n    run: echo\n    requries: []\n",
        )
        .args(&["procedures", "show", "p"])
        .expect(&["plans/p.yaml:5:5: unknown key `requries` in a phase; did you mean `requires`?"]),
    ]);
}

#[test]
fn several_problems_at_once() {
    run_table(vec![
        case(
            "three problems",
            "name: p\nphases:\n  - id: a\n    check: \"{{ ready }}\"\n    retries: -1\n    idempotent: sometimes\n",
        )
        .expect(&[
            "3 problems found:",
            "plans/p.yaml:4:12: template uses undefined name `ready`",
            "plans/p.yaml:5:14: phase `a`: retries must be a whole number such as 3, not `-1`",
            "plans/p.yaml:6:17: phase `a`: idempotent must be true or false, not `sometimes`",
        ])
        .no_operation(),
        case(
            "five problems across params and phases",
            "name: p
params:
  node:
    descripton: node to drain
phases:
  - id: drain
    run: kubectl drain {{ nod }}
    timeout: forever
  - id: drain
    run: echo again
  - id: uncordon
    requires: [drian]
    run: kubectl uncordon {{ node }}
",
        )
        .expect(&[
            "5 problems found:",
            "plans/p.yaml:4:5: unknown key `descripton` in parameter `node`; did you mean `description`?",
            "plans/p.yaml:7:10: template uses undefined name `nod`; did you mean `node`?",
            "plans/p.yaml:8:14: phase `drain`: timeout must be a duration such as 30s, 10m or 1h, not `forever`",
            "plans/p.yaml:9:9: duplicate phase id `drain` (first defined at line 6)",
            "plans/p.yaml:12:16: phase /uncordon requires unknown phase `drian`; did you mean `/drain`?",
        ])
        .no_operation(),
        case(
            "problems listed in file order",
            "name: p\nphases:\n  - id: b\n    requires: [zz]\n    run: echo {{ x }}\n  - id: B\n    run: echo\n",
        )
        .args(&["procedures", "show", "p"])
        .expect(&[
            "3 problems found:",
            "plans/p.yaml:4:16: phase /b requires unknown phase `zz`",
            "plans/p.yaml:5:10: template uses undefined name `x`",
            "plans/p.yaml:6:9: phase id `B` must be lowercase",
        ]),
    ]);
}

#[test]
fn conditions() {
    run_table(vec![
        case(
            "when with a syntax error",
            "name: p\nphases:\n  - id: a\n    when: \"{{ ready and }}\"\n    run: echo\n",
        )
        .expect(&["plans/p.yaml:4:11: bad template: syntax error: "])
        .no_operation(),
        case(
            "when with an undeclared name",
            "name: p\nparams:\n  ready: {}\nphases:\n  - id: a\n    when: {that: \"{{ redy }}\", reason: \"{{ nope }}\"}\n    run: echo\n",
        )
        .expect(&[
            "2 problems found",
            "plans/p.yaml:6:18: template uses undefined name `redy`; did you mean `ready`?",
            "plans/p.yaml:6:40: template uses undefined name `nope`",
        ])
        .no_operation(),
        case(
            "when on a group",
            "name: p\nphases:\n  - id: g\n    when: \"{{ true }}\"\n    phases:\n      - id: a\n        run: echo\n",
        )
        .expect(&[
            "plans/p.yaml:4:11: phase `g`: `when:` applies to a phase with an action, not a group; put it on the phases inside",
        ])
        .no_operation(),
        case(
            "when without that",
            "name: p\nphases:\n  - id: a\n    when: {reason: later}\n    run: echo\n",
        )
        .expect(&["phase `a`: `when:` needs `that:`"]),
        case(
            "when with an unknown key",
            "name: p\nphases:\n  - id: a\n    when: {that: \"{{ true }}\", becuase: x}\n    run: echo\n",
        )
        .expect(&["unknown key `becuase` in phase `a` when"]),
    ]);
}

const INCLUDED: &str = "name: q\nparams:\n  node: {required: true, pattern: '^[a-z0-9-]+$'}\n  mode: {default: soft}\nphases:\n  - id: one\n    run: echo {{ node }}\n    capture: {found: json.x}\n  - id: two\n    requires: [one]\n    run: echo {{ mode }}\n";

#[test]
fn includes() {
    run_table(vec![
        case(
            "include of an unknown procedure",
            "name: p\nphases:\n  - id: a\n    include: {procedure: qq, with: {node: n1}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:4:14: phase `a` includes unknown procedure `qq` (did you mean `q`?)"])
        .no_operation(),
        case(
            "include with an unknown parameter",
            "name: p\nphases:\n  - id: a\n    include: {procedure: q, with: {node: n1, nod: x}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:4:46: phase `a`: procedure `q` has no parameter `nod`; did you mean `node`?"]),
        case(
            "include without a required parameter",
            "name: p\nphases:\n  - id: a\n    include: {procedure: q, with: {mode: hard}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:4:14: phase `a`: procedure `q` needs its required parameter `node`; add `with: {node: ...}`"]),
        case(
            "include cycle",
            "name: p\nphases:\n  - id: a\n    include: {procedure: r}\n",
        )
        .file("r.yaml", "name: r\nphases:\n  - id: b\n    include: {procedure: p}\n")
        .expect(&["include cycle: p → r → p"])
        .no_operation(),
        case(
            "a procedure includes itself",
            "name: p\nphases:\n  - id: a\n    run: echo\n  - id: b\n    include: {procedure: p}\n",
        )
        .expect(&["plans/p.yaml:6:14: phase `b`: include cycle: p → p"]),
        case(
            "included procedure uses absolute requires",
            "name: p\nphases:\n  - id: a\n    include: {procedure: r}\n",
        )
        .file("r.yaml", "name: r\nphases:\n  - id: b\n    run: echo\n  - id: c\n    requires: [/b]\n    run: echo\n")
        .expect(&["plans/p.yaml:4:14: phase `a`: procedure `r` cannot be included: it requires `/b` by absolute path (at ", "r.yaml:6:16)"]),
        case(
            "included procedure has secret parameters",
            "name: p\nphases:\n  - id: a\n    include: {procedure: r, with: {token: x}}\n",
        )
        .file("r.yaml", "name: r\nparams:\n  token: {secret: true}\nphases:\n  - id: b\n    run: echo {{ token }}\n")
        .expect(&["plans/p.yaml:4:14: phase `a`: procedure `r` has secret parameters (token); including a procedure with secret parameters is not supported"]),
        case(
            "include phase with an action",
            "name: p\nphases:\n  - id: a\n    include: {procedure: q, with: {node: n1}}\n    run: echo\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:5:5: phase `a`: `run:` does not apply to a phase with `include:`"]),
        case(
            "include with a captured value",
            "name: p\nphases:\n  - id: find\n    run: echo\n    capture: {node: json.node}\n  - id: a\n    include: {procedure: q, with: {node: \"{{ node }}\"}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:7:36: phase `a`: include `with: node` uses `node`, a value captured at run time"]),
        case(
            "include with an undefined name",
            "name: p\nphases:\n  - id: a\n    include: {procedure: q, with: {node: \"{{ nod }}\"}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:4:42: template uses undefined name `nod`"]),
        case(
            "requires into an include that does not exist",
            "name: p\nphases:\n  - id: a\n    include: {procedure: q, with: {node: n1}}\n  - id: b\n    requires: [/a/tow]\n    run: echo\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["plans/p.yaml:6:16: phase /b requires unknown phase `/a/tow`; did you mean `/a/two`?"]),
        case(
            "included value against the included pattern",
            "name: p\nparams:\n  n: {required: true}\nphases:\n  - id: a\n    include: {procedure: q, with: {node: \"{{ n }}\"}}\n",
        )
        .file("q.yaml", INCLUDED)
        .args(&["start", "p", "--set", "n=Bad Node"])
        .expect(&["plans/p.yaml:6:36: phase /a: parameter `node` of procedure `q`: `Bad Node` does not match the pattern ^[a-z0-9-]+$"])
        .no_operation(),
        case(
            "parallel include without foreach",
            "name: p\nphases:\n  - id: a\n    parallel: true\n    max_parallel: 0\n    include: {procedure: q, with: {node: n1}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&[
            "plans/p.yaml:4:15: phase `a`: `parallel:` applies to a group (`phases:` or `foreach:`)",
            "plans/p.yaml:5:19: phase `a`: max_parallel must be at least 1",
        ]),
        case(
            "foreach include with an undefined item name",
            "name: p\nphases:\n  - id: a\n    foreach: [x, y]\n    as: n\n    include: {procedure: q, with: {node: \"{{ item }}\"}}\n",
        )
        .file("q.yaml", INCLUDED)
        .expect(&["template uses undefined name `item`"]),
    ]);
}
