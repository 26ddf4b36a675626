//! Property test of the procedure loader (issue 10): random procedure documents — structured
//! ones mixing valid keys and values with junk, the same with random edits, and raw random
//! text and bytes — are fed to the library's loader (`Procedure::parse`, then, when that
//! succeeds, parameters with their defaults and the plan). For every input:
//!
//! - no panic (proptest turns one into a failure and shrinks the input);
//! - an answer within [`BOUND`], measured per case;
//! - every diagnostic has a location: the file, a line (1-based, inside the file) and a column.
//!
//! 256 cases per property keep the suite quick; `PROPTEST_CASES=5000` runs more.

use std::time::{Duration, Instant};

use medic::procedure::{Procedure, ProcedureError};
use medic::source::{decode_utf8, yaml_lines, Diagnostic};
use medic::template::Templates;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// How long loading one document may take.
const BOUND: Duration = Duration::from_secs(2);

fn located(diags: &[Diagnostic], text: &str) -> Result<(), TestCaseError> {
    let lines = yaml_lines(text).len();
    for d in diags {
        let Some(loc) = &d.location else {
            return Err(TestCaseError::fail(format!(
                "diagnostic without a location: {d}\n--- input\n{text}"
            )));
        };
        prop_assert_eq!(&loc.file, "p.yaml", "{}\n--- input\n{}", d, text);
        prop_assert!(
            loc.line >= 1 && loc.line <= lines && loc.column >= 1,
            "location outside the file ({} lines): {}\n--- input\n{}",
            lines,
            d,
            text
        );
    }
    Ok(())
}

/// Loads `text` as `plans/p.yaml`, then builds its plan with the parameters' defaults.
fn load(text: &str) -> Result<(), TestCaseError> {
    let started = Instant::now();
    match Procedure::parse("p.yaml", text, Some("p")) {
        Err(ProcedureError::Invalid(diags)) => {
            prop_assert!(!diags.is_empty(), "refused without a reason\n{}", text);
            located(&diags, text)?;
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!(
                "unexpected error kind: {other}\n--- input\n{text}"
            )))
        }
        Ok(procedure) => {
            if let Ok(params) = procedure.resolve_params(&[]) {
                match procedure.build_plan(
                    &params,
                    &Templates::new(),
                    None,
                    medic::procedure::DEFAULT_MAX_PHASES,
                ) {
                    Err(ProcedureError::Invalid(diags)) => located(&diags, text)?,
                    Err(other) => {
                        return Err(TestCaseError::fail(format!(
                            "unexpected error kind: {other}\n--- input\n{text}"
                        )))
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    let took = started.elapsed();
    prop_assert!(took < BOUND, "took {:?}\n--- input\n{}", took, text);
    Ok(())
}

fn pick(items: &'static [&'static str]) -> BoxedStrategy<String> {
    proptest::sample::select(items)
        .prop_map(str::to_string)
        .boxed()
}

/// Printable junk, YAML punctuation included.
fn junk() -> BoxedStrategy<String> {
    "[ -~]{0,12}".boxed()
}

fn id() -> BoxedStrategy<String> {
    prop_oneof![
        30 => "[a-z][a-z0-9-]{0,5}[a-z0-9]",
        1 => pick(&["a", "b", "42", "true", "~", "1.5", "'x'", "\"\"", "Bad/Id", "-x", "[a]", "{}"]),
        1 => junk(),
    ]
    .boxed()
}

/// A template as written, unquoted (the caller quotes it for its place in the YAML).
fn template() -> BoxedStrategy<String> {
    prop_oneof![
        12 => pick(&["echo hi", "echo {{ v }}", "{{ l | length >= 1 }}", "echo {{ operation.procedure }}"]),
        4 => pick(&[
            "echo {{ x }}",
            "{{ 1 // 0 }}",
            "{{ v // 0 }}",
            "{% include 'x' %}",
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            "{% macro f() %}y{% endmacro %}{{ f() }}",
            "{{ oops",
            "echo {{ item }}",
            "{{ v | lenght }}",
            "{{ l | length >= 2 }}",
            "{% for i in l %}{{ i }}{% endfor %}",
            "{{ inventory.nodes }}",
            "echo one\necho {{ v }}",
            "",
        ]),
        1 => junk(),
    ]
    .boxed()
}

/// A template as a YAML value: mostly a double-quoted string, sometimes written bare.
fn value() -> BoxedStrategy<String> {
    prop_oneof![
        8 => template().prop_map(|t| serde_json::to_string(&t).expect("a string")),
        1 => template(),
    ]
    .boxed()
}

fn duration() -> BoxedStrategy<String> {
    prop_oneof![
        6 => pick(&["10s", "2m"]),
        1 => pick(&["0s", "0", "10s", "1h30m", "500ms", "1e300", "-1", "soon", "\"{{ v }}\"", "[1]"]),
        1 => junk(),
    ]
    .boxed()
}

fn action() -> BoxedStrategy<String> {
    prop_oneof![
        6 => value().prop_map(|t| format!("run: {t}")),
        1 => value().prop_map(|t| format!("check: {{that: {t}}}")),
        1 => value().prop_map(|t| format!("pause: {t}")),
        1 => (value(), duration()).prop_map(|(t, d)| format!("wait: {{run: {t}, timeout: {d}, interval: {d}}}")),
        1 => value().prop_map(|t| format!("ssh: {{on: a, run: {t}}}")),
        1 => pick(&[
            "kube: {cordon: \"{{ v }}\"}",
            "kube: {wait_ready: {node: n, timeout: 0s}}",
            "etcd: {member_list: {}}",
            "etcd: {member_remove: {name: x}}",
            "include: {procedure: q, with: {node: x}}",
            "run:",
            "nope: 1",
        ]),
    ]
    .boxed()
}

/// Keeps the first of several `key: ...` entries with the same key (YAML refuses duplicates,
/// which would hide everything else the document is meant to exercise).
fn first_of_each(entries: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    entries
        .into_iter()
        .filter(|e| seen.insert(e.split(':').next().unwrap_or_default().trim().to_string()))
        .collect()
}

/// Optional keys of a phase, each as `key: value` on one line.
fn phase_keys() -> BoxedStrategy<Vec<String>> {
    let one = prop_oneof![
        8 => pick(&["description: d", "timeout: 10s", "retries: 2", "idempotent: true", "when: \"{{ v == 'x' }}\"", "requires: []"]),
        1 => value().prop_map(|t| format!("description: {t}")),
        1 => prop::collection::vec(prop_oneof![id(), pick(&["'//a'", "/a/", "''", "/", "../a", "/a/b"])], 0..3)
            .prop_map(|r| format!("requires: [{}]", r.join(", "))),
        1 => duration().prop_map(|d| format!("timeout: {d}")),
        1 => duration().prop_map(|d| format!("retry_delay: {d}")),
        1 => pick(&["retries: 3", "retries: 1000", "retries: x", "idempotent: true", "idempotent: maybe"]),
        1 => pick(&["parallel: true", "parallel: false", "max_parallel: 0", "max_parallel: 2"]),
        1 => pick(&["foreach: [x, y]", "foreach: \"{{ l }}\"", "foreach: \"{{ 5 }}\"", "foreach: {a: 1}", "foreach: [x, x]", "foreach: [X]"]),
        1 => pick(&["as: v", "as: n", "as: item", "as: inventory", "as: 1x"]),
        1 => pick(&["capture: {x: json.x}", "capture: {v: json.v}", "capture: {l: json.l +}", "capture: x"]),
        1 => action().prop_map(|a| format!("rollback: {{{a}}}")),
        1 => value().prop_map(|t| format!("when: {t}")),
        1 => pick(&["when: {that: \"{{ x }}\", reason: r}", "when: {reason: r}"]),
        1 => junk().prop_map(|k| format!("{k}: 1")),
    ];
    prop::collection::vec(one, 0..3)
        .prop_map(first_of_each)
        .boxed()
}

/// A list of phases at `indent`, nested up to `depth` more levels.
fn phases(indent: usize, depth: u32) -> BoxedStrategy<String> {
    let leaf = (id(), action(), phase_keys()).prop_map(move |(id, action, keys)| {
        let pad = " ".repeat(indent);
        let mut out = format!("{pad}- id: {id}\n{pad}  {action}\n");
        for k in keys {
            out.push_str(&format!("{pad}  {k}\n"));
        }
        out
    });
    let phase = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![
            3 => leaf,
            1 => (id(), phase_keys(), phases(indent + 4, depth - 1)).prop_map(move |(id, keys, children)| {
                let pad = " ".repeat(indent);
                let mut out = format!("{pad}- id: {id}\n");
                for k in keys {
                    out.push_str(&format!("{pad}  {k}\n"));
                }
                out.push_str(&format!("{pad}  phases:\n{children}"));
                out
            }),
        ]
        .boxed()
    };
    prop::collection::vec(phase, 1..4)
        .prop_map(|list| list.concat())
        .boxed()
}

fn params() -> BoxedStrategy<String> {
    let setting = pick(&[
        "required: true",
        "required: maybe",
        "default: x",
        "default: [a, b]",
        "default: {a: 1}",
        "type: list",
        "type: string",
        "type: number",
        "pattern: '^[a-z]+$'",
        "pattern: '[0-9'",
        "secret: true",
        "description: d",
    ]);
    let param = (
        prop_oneof![6 => pick(&["x", "node", "token"]), 1 => pick(&["item", "my-param", "42"])],
        prop::collection::vec(setting, 0..4).prop_map(first_of_each),
    )
        .prop_map(|(name, settings)| format!("  {name}: {{{}}}\n", settings.join(", ")));
    // `v` and `l`, which the well-formed templates use, are always there.
    prop::collection::vec(param, 0..3)
        .prop_map(first_of_each)
        .prop_map(|list| {
            format!(
                "params:\n  v: {{default: x}}\n  l: {{default: [a, b]}}\n{}",
                list.concat()
            )
        })
        .boxed()
}

/// A whole document: mostly well-formed, with junk in places.
fn document() -> BoxedStrategy<String> {
    (
        prop_oneof![
            12 => Just("name: p\n".to_string()),
            1 => pick(&["name: q\n", "name: 42\n", "", "name: [p]\n"]),
        ],
        prop::option::of(value().prop_map(|t| format!("description: {t}\n"))),
        params(),
        phases(2, 2),
        prop_oneof![
            12 => Just(String::new()),
            1 => pick(&["---\nname: q\n", "...\n", "\t\n", "phases: []\n", "extra: 1\n"]),
        ],
    )
        .prop_map(|(name, description, params, phases, tail)| {
            format!(
                "{name}{}{params}phases:\n{phases}{tail}",
                description.unwrap_or_default(),
            )
        })
        .boxed()
}

/// Random edits of a document: insert, delete or replace at random places.
fn mutated() -> BoxedStrategy<String> {
    let edit = (
        any::<prop::sample::Index>(),
        0usize..6,
        pick(&[
            "{", "}", "[", "]", ":", "- ", "\n", "\t", "'", "\"", "#", "&a ", "*a", "!t ", "---\n",
            "{{", "%}", "\u{feff}", "é", "\0",
        ]),
    );
    (document(), prop::collection::vec(edit, 1..6))
        .prop_map(|(doc, edits)| {
            let mut chars: Vec<char> = doc.chars().collect();
            for (at, len, text) in edits {
                let i = if chars.is_empty() {
                    0
                } else {
                    at.index(chars.len() + 1)
                };
                match len {
                    0 => {
                        let end = (i + 3).min(chars.len());
                        chars.drain(i..end);
                    }
                    _ => {
                        for (k, c) in text.chars().enumerate() {
                            chars.insert(i + k, c);
                        }
                    }
                }
            }
            chars.into_iter().collect()
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn structured_documents(text in document()) {
        load(&text)?;
    }

    #[test]
    fn edited_documents(text in mutated()) {
        load(&text)?;
    }

    #[test]
    fn random_text(text in "(?s).{0,400}") {
        load(&text)?;
    }

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        match decode_utf8("p.yaml", bytes) {
            Ok(text) => load(&text)?,
            Err(d) => {
                let loc = d.location.as_ref();
                prop_assert!(loc.is_some_and(|l| l.line >= 1 && l.column >= 1), "{}", d);
            }
        }
    }
}
