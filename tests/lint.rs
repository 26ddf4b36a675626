//! `medic procedures lint` (issue 19, item 1), run through the real binary.
//!
//! The first table holds, per warning code, a minimal procedure that triggers it (and nothing
//! else) next to its fixed neighbour, which must lint clean: a rule can neither go silent nor
//! fire too widely without a case failing. Then load errors (exit 2, file:line:col, all at
//! once), `--strict`, the JSON shape, includes, and the shipped plans, which must lint clean.

mod common;

use common::{run_table, Env};

/// One procedure (`plans/p.yaml`) and the one warning it must give, if any.
struct Case {
    name: &'static str,
    yaml: String,
    /// `Some((code, place))`: exactly this warning, at `plans/p.yaml:LINE:COL`; `None`: clean.
    warning: Option<(&'static str, &'static str)>,
}

fn warns(name: &'static str, code: &'static str, place: &'static str, phases: &str) -> Case {
    Case {
        name,
        yaml: procedure(phases),
        warning: Some((code, place)),
    }
}

fn clean(name: &'static str, phases: &str) -> Case {
    Case {
        name,
        yaml: procedure(phases),
        warning: None,
    }
}

/// A procedure with the parameters the cases use; its phases start at line 8.
fn procedure(phases: &str) -> String {
    format!(
        "name: p\ndescription: a lint case\nparams:\n  node: {{description: the node, required: true}}\n  token: {{description: a token, secret: true}}\n  extra: {{description: unused unless a case uses it}}\nphases:\n{phases}"
    )
}

/// Uses `token` and `extra` so that only the case's own phases can warn.
const USES_PARAMS: &str = r#"  - id: uses
    description: use the other parameters
    run: {command: "echo {{ extra }} > /dev/null", env: {TOKEN: "{{ token }}"}}
    idempotent: true
"#;

/// Reads the node, then checks it is down: the `check` a destructive phase wants first.
const CHECK_FIRST: &str = r#"  - id: info
    description: read the node
    kube: {node_info: "{{ node }}"}
    capture: {ready: ready}
  - id: down
    description: the node is down
    check: {that: "{{ not ready }}", message: "{{ node }} is Ready"}
"#;

/// A parallel group: a check, then a delete_node with `requires` (the phase's extra lines).
fn parallel(requires: &str) -> String {
    format!(
        r#"  - id: both
    description: at once
    parallel: true
    phases:
      - id: down
        description: the operator said the node is down
        check: {{that: "{{{{ extra == 'down' }}}}", message: "pass --set extra=down"}}
      - id: delete
        description: delete the Node object
{requires}        kube: {{delete_node: "{{{{ node }}}}"}}
"#
    )
}

const DELETE: &str = r#"  - id: delete
    description: delete the Node object
    kube: {delete_node: "{{ node }}"}
"#;

fn cases() -> Vec<Case> {
    let with = |parts: &[&str]| parts.concat();
    vec![
        // destructive-without-check
        warns(
            "delete_node with no check",
            "destructive-without-check",
            "plans/p.yaml:12:5",
            &with(&[USES_PARAMS, DELETE]),
        ),
        clean(
            "delete_node after a check",
            &with(&[USES_PARAMS, CHECK_FIRST, DELETE]),
        ),
        clean(
            "delete_node in a group after a group with a check",
            &with(&[
                USES_PARAMS,
                r#"  - id: checks
    description: checks
    phases:
      - id: down
        description: the operator said the node is down
        check: {that: "{{ extra == 'down' }}", message: "pass --set extra=down"}
  - id: change
    description: the change
    phases:
      - id: delete
        description: delete the Node object
        kube: {delete_node: "{{ node }}"}
"#,
            ]),
        ),
        warns(
            "a check before it in a parallel group is not before it",
            "destructive-without-check",
            "plans/p.yaml:19:9",
            &with(&[USES_PARAMS, &parallel("")]),
        ),
        clean(
            "in a parallel group, requires names the check",
            &with(&[USES_PARAMS, &parallel("        requires: [down]\n")]),
        ),
        clean(
            "delete_node with a when: condition",
            &with(&[
                USES_PARAMS,
                &DELETE.replace("    kube:", "    when: \"{{ extra == 'yes' }}\"\n    kube:"),
            ]),
        ),
        warns(
            "etcd member_remove with no check",
            "destructive-without-check",
            "plans/p.yaml:12:5",
            &with(&[
                USES_PARAMS,
                "  - id: remove\n    description: remove the member\n    etcd: {member_remove: {name: \"{{ node }}\"}}\n",
            ]),
        ),
        warns(
            "etcdctl member remove over ssh with no check",
            "destructive-without-check",
            "plans/p.yaml:12:5",
            &with(&[
                USES_PARAMS,
                "  - id: remove\n    description: remove the member\n    idempotent: true\n    ssh: {on: \"{{ node }}\", run: \"etcdctl member remove {{ node }}\"}\n",
            ]),
        ),
        warns(
            "a drain that bypasses disruption budgets",
            "destructive-without-check",
            "plans/p.yaml:12:5",
            &with(&[
                USES_PARAMS,
                "  - id: drain\n    description: drain\n    kube: {drain: {node: \"{{ node }}\", disable_eviction: true}}\n",
            ]),
        ),
        clean(
            "a drain through the eviction API (budgets checked by the cluster)",
            &with(&[
                USES_PARAMS,
                "  - id: drain\n    description: drain\n    kube: {drain: {node: \"{{ node }}\"}}\n",
            ]),
        ),
        // missing-description
        warns(
            "a phase with no description",
            "missing-description",
            "plans/p.yaml:12:5",
            &with(&[USES_PARAMS, "  - id: look\n    kube: {node_info: \"{{ node }}\"}\n"]),
        ),
        clean(
            "a phase with a description",
            &with(&[
                USES_PARAMS,
                "  - id: look\n    description: read the node\n    kube: {node_info: \"{{ node }}\"}\n",
            ]),
        ),
        // irreversible
        warns(
            "a command that is not idempotent, with no rollback",
            "irreversible",
            "plans/p.yaml:12:5",
            &with(&[
                USES_PARAMS,
                "  - id: mark\n    description: mark {{ node }}\n    run: \"touch /tmp/mark-{{ node }}\"\n",
            ]),
        ),
        clean(
            "the same command with a rollback",
            &with(&[
                USES_PARAMS,
                "  - id: mark\n    description: mark {{ node }}\n    run: \"touch /tmp/mark-{{ node }}\"\n    rollback: {run: \"rm -f /tmp/mark-{{ node }}\"}\n",
            ]),
        ),
        clean(
            "the same command declared idempotent",
            &with(&[
                USES_PARAMS,
                "  - id: mark\n    description: mark {{ node }}\n    run: \"touch /tmp/mark-{{ node }}\"\n    idempotent: true\n",
            ]),
        ),
        // unused-param
        warns(
            "a parameter no template uses",
            "unused-param",
            "plans/p.yaml:6:3",
            "  - id: look\n    description: read {{ node }}\n    run: {command: \"true\", env: {TOKEN: \"{{ token }}\"}}\n    idempotent: true\n",
        ),
        clean(
            "the parameter used only in a capture expression",
            "  - id: look\n    description: read {{ node }}\n    run: {command: \"true\", env: {TOKEN: \"{{ token }}\"}}\n    idempotent: true\n    capture: {same: \"stdout == extra\"}\n",
        ),
        // secret-in-description
        warns(
            "a secret parameter in a description",
            "secret-in-description",
            "plans/p.yaml:12:5",
            &with(&[
                USES_PARAMS,
                "  - id: join\n    description: join {{ node }} with {{ token }}\n    run: {command: \"true\", env: {NODE: \"{{ node }}\"}}\n    idempotent: true\n",
            ]),
        ),
        clean(
            "the secret in the command's environment only",
            &with(&[
                USES_PARAMS,
                "  - id: join\n    description: join {{ node }} with the token\n    run: {command: \"true\", env: {NODE: \"{{ node }}\", T: \"{{ token }}\"}}\n    idempotent: true\n",
            ]),
        ),
    ]
}

#[test]
fn each_warning_fires_on_its_case_and_not_on_the_fixed_neighbour() {
    run_table(
        &cases(),
        |c| c.name,
        |c| {
            let env = Env::new();
            env.procedure("p", &c.yaml);
            let out = env
                .medic(&["procedures", "lint", "--strict", "plans/p.yaml"])
                .run()
                .no_panic();
            match c.warning {
                Some((code, place)) => {
                    out.code(1)
                        .stdout_contains(&format!("{place}: warning[{code}]: "))
                        .stdout_contains("linted 1 procedure: 0 errors, 1 warning\n");
                }
                None => {
                    out.code(0)
                        .stdout_contains("linted 1 procedure: 0 errors, 0 warnings\n")
                        .stdout_lacks("warning[");
                }
            }
        },
    );
}

#[test]
fn warnings_exit_zero_without_strict() {
    let env = Env::new();
    env.procedure("p", &procedure(&[USES_PARAMS, DELETE].concat()));
    env.medic(&["procedures", "lint", "plans/p.yaml"])
        .run()
        .code(0)
        .stdout_contains("plans/p.yaml:12:5: warning[destructive-without-check]: phase `delete` deletes a Node object");
}

/// The loader's diagnostics, all of them, as it prints them; exit 2 even without --strict,
/// and for the catalog (no argument) too.
#[test]
fn load_errors_exit_two_with_every_position() {
    let env = Env::new();
    env.procedure(
        "p",
        "name: p\ndescription: broken twice\nphases:\n  - id: a\n    description: \"{{ nope }}\"\n    run: \"true\"\n  - id: b\n    requires: [zz]\n    run: \"true\"\n",
    );
    for args in [
        &["procedures", "lint", "plans/p.yaml"][..],
        &["procedures", "lint"][..],
    ] {
        env.medic(args)
            .run()
            .no_panic()
            .code(2)
            .stdout_contains("plans/p.yaml:5:18: template uses undefined name `nope`")
            .stdout_contains(
                "plans/p.yaml:8:16: phase /b requires unknown phase `zz`; did you mean `/a`?",
            )
            .stdout_contains("2 errors");
    }
    env.medic(&["procedures", "lint", "plans/missing.yaml", "notes.txt"])
        .run()
        .code(2)
        .stdout_contains("plans/missing.yaml: no such file")
        .stdout_contains("notes.txt: not a procedure file");
}

#[test]
fn json_gives_one_object_per_diagnostic() {
    let env = Env::new();
    env.procedure("p", &procedure(&[USES_PARAMS, DELETE].concat()));
    env.procedure(
        "q",
        "name: q\ndescription: broken\nphases:\n  - id: a\n    description: \"{{ nope }}\"\n    run: \"true\"\n",
    );
    let out = env
        .medic(&["procedures", "lint", "plans", "-o", "json"])
        .run()
        .code(2);
    let json = out.json();
    let diagnostics = json["diagnostics"].as_array().expect("a diagnostics list");
    assert_eq!(diagnostics.len(), 2, "{json:#}");
    for d in diagnostics {
        let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["code", "column", "file", "line", "message", "severity"],
            "{d:#}"
        );
    }
    let find = |severity: &str| {
        diagnostics
            .iter()
            .find(|d| d["severity"] == severity)
            .unwrap_or_else(|| panic!("no {severity} in {json:#}"))
    };
    let warning = find("warning");
    assert_eq!(warning["file"], "plans/p.yaml");
    assert_eq!(warning["line"], 12);
    assert_eq!(warning["column"], 5);
    assert_eq!(warning["code"], "destructive-without-check");
    let error = find("error");
    assert_eq!(error["file"], "plans/q.yaml");
    assert_eq!(error["line"], 5);
    assert_eq!(error["column"], 18);
    assert_eq!(error["code"], "invalid");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("undefined name `nope`"));
}

/// An included procedure's phases are linted in their own file, once, not again as children
/// of the phase that includes them.
#[test]
fn included_phases_are_linted_in_their_own_file() {
    let env = Env::new();
    env.procedure(
        "inner",
        "name: inner\ndescription: included\nphases:\n  - id: look\n    run: \"true\"\n    idempotent: true\n",
    );
    env.procedure(
        "outer",
        "name: outer\ndescription: includes inner\nphases:\n  - id: in\n    description: the inner steps\n    include: {procedure: inner}\n",
    );
    env.medic(&["procedures", "lint", "--strict", "plans"])
        .run()
        .code(1)
        .stdout_contains("plans/inner.yaml:4:5: warning[missing-description]")
        .stdout_contains("linted 2 procedures: 0 errors, 1 warning\n");
    // One file alone resolves its include through its directory.
    env.medic(&["procedures", "lint", "--strict", "plans/outer.yaml"])
        .run()
        .code(0)
        .stdout_contains("linted 1 procedure: 0 errors, 0 warnings\n");
}

/// The procedures medic ships lint clean, as files and as the built-in catalog.
#[test]
fn shipped_plans_lint_clean() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/plans");
    let count = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert!(count >= 7, "plans/ has {count} procedures");
    let summary = format!("linted {count} procedures: 0 errors, 0 warnings\n");
    let env = Env::new();
    env.medic(&["procedures", "lint", "--strict", dir])
        .run()
        .code(0)
        .stdout_lacks("warning[")
        .stdout_contains(&summary);
    env.medic(&["procedures", "lint", "--strict"])
        .run()
        .code(0)
        .stdout_contains(&summary);
}
