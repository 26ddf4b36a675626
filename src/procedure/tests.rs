//! Unit tests of procedure loading, validation, parameters and plan building.

use super::catalog::builtin;
use super::validate::templates::recursive_macro;
use super::*;
use crate::plan::PhaseId;
use crate::template::Templates;

fn parse(text: &str) -> Result<Procedure, Vec<String>> {
    Procedure::parse("t.yaml", text, None).map_err(|e| match e {
        ProcedureError::Invalid(d) => d.into_iter().map(|d| d.to_string()).collect(),
        other => vec![other.to_string()],
    })
}

#[test]
fn foreach_expands_into_a_group_and_relative_requires_stay_inside() {
    let p = parse(
        "name: t\nparams:\n  nodes: {default: [a, b]}\nphases:\n  - id: each\n    foreach: \"{{ nodes }}\"\n    parallel: true\n    phases:\n      - id: one\n        run: echo {{ item }}\n      - id: two\n        requires: [one]\n        run: echo two\n",
    )
    .unwrap();
    let params = p.resolve_params(&[]).unwrap();
    let plan = p
        .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
        .unwrap();
    let ids: Vec<&str> = plan.nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "/",
            "/each",
            "/each/a",
            "/each/a/one",
            "/each/a/two",
            "/each/b",
            "/each/b/one",
            "/each/b/two"
        ]
    );
    let two = plan.node(plan.find(&PhaseId::parse("/each/b/two")).unwrap());
    assert_eq!(two.requires, [PhaseId::parse("/each/b/one")]);
    assert!(plan.node(1).parallel);
    assert_eq!(plan.node(3).locals["item"], "a");
}

#[test]
fn the_phase_cap_counts_expanded_phases_without_the_root() {
    let p = parse(
        "name: t\nparams:\n  nodes: {default: [a, b]}\nphases:\n  - id: each\n    foreach: \"{{ nodes }}\"\n    phases:\n      - id: one\n        run: echo {{ item }}\n      - id: two\n        run: echo two\n",
    )
    .unwrap();
    let params = p.resolve_params(&[]).unwrap();
    // /each, /each/a, /each/a/one, /each/a/two, and the same for b: 7 phases.
    let build = |max| p.build_plan(&params, &Templates::new(), None, max);
    assert_eq!(build(7).unwrap().len(), 8);
    match build(6) {
        Err(ProcedureError::TooManyPhases { procedure, limit }) => {
            assert_eq!((procedure.as_str(), limit), ("t", 6))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn list_params_split_on_commas() {
    let p = parse("name: t\nparams:\n  nodes: {type: list, required: true}\nphases:\n  - id: a\n    foreach: \"{{ nodes }}\"\n    run: echo {{ item }}\n").unwrap();
    let params = p.resolve_params(&["nodes=w-1, w-2".into()]).unwrap();
    assert_eq!(params.values["nodes"], serde_json::json!(["w-1", "w-2"]));
}

#[test]
fn every_file_in_plans_is_built_in_verbatim() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".yaml"))
                .map(|n| n.to_string())
        })
        .collect();
    files.sort();
    let listed: Vec<String> = builtin::BUILTIN_PLANS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        listed, files,
        "list every plans/*.yaml in builtin::BUILTIN_PLANS"
    );
    for (name, text) in builtin::BUILTIN_PLANS {
        let on_disk = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
        assert_eq!(*text, on_disk);
    }
}

#[test]
fn every_built_in_procedure_is_valid_and_renders_with_its_defaults() {
    let catalog = Catalog::load(None).unwrap();
    let names: Vec<&str> = catalog.names().collect();
    assert!(names.contains(&"local-preflight"), "{names:?}");
    for name in names {
        let p = catalog.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sets: Vec<String> = p
            .params
            .iter()
            .filter(|s| s.required && s.default.is_none())
            .map(|s| {
                // A value each required parameter's pattern accepts.
                let value = match s.name.as_str() {
                    "version" => "1.31.2".to_string(),
                    "from_version" => "1.30.2".to_string(),
                    "join_command" => {
                        "kubeadm join 10.0.0.1:6443 --discovery-token-ca-cert-hash sha256:00"
                            .to_string()
                    }
                    "token" => "abcdef.0123456789abcdef".to_string(),
                    "certificate_key" => "0".repeat(64),
                    _ => "example".to_string(),
                };
                format!("{}={value}", s.name)
            })
            .collect();
        let params = p
            .resolve_params(&sets)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Procedures that expand over the inventory's nodes get a small one.
        let inventory = serde_json::json!({"nodes": [
            {"name": "cp-1", "address": "10.0.0.1", "roles": ["control-plane", "etcd"]},
            {"name": "worker-1", "address": "10.0.0.2", "roles": ["worker"]},
        ]});
        p.build_plan(
            &params,
            &Templates::new(),
            Some(inventory),
            DEFAULT_MAX_PHASES,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn recursive_macros_are_found_with_their_cycle() {
    let table: &[(&str, Option<&[&str]>)] = &[
        ("{% macro f() %}{{ f() }}{% endmacro %}", Some(&["f", "f"])),
        (
            "{% macro f() %}{{ g() }}{% endmacro %}{% macro g() %}{{ f() }}{% endmacro %}",
            Some(&["f", "g", "f"]),
        ),
        (
            "{%- macro f(n) -%}{{ f(n - 1) }}{%- endmacro %}",
            Some(&["f", "f"]),
        ),
        (
            "{% macro f() %}{{ g() }}{% endmacro %}{% macro g() %}x{% endmacro %}",
            None,
        ),
        // `ff(` and `x.f(` are not calls of `f`.
        ("{% macro f() %}{{ ff() }}{{ x.f() }}{% endmacro %}", None),
        ("{{ f() }}", None),
    ];
    for (source, expected) in table {
        let found = recursive_macro(source).map(|(cycle, _)| cycle);
        let expected = expected.map(|c| c.iter().map(|s| s.to_string()).collect());
        assert_eq!(found, expected, "{source}");
    }
}

#[test]
fn cycle_is_named() {
    let errs = parse(
        "name: t\nphases:\n  - id: a\n    requires: [b]\n    run: x\n  - id: b\n    run: y\n",
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("requires cycle: /a → /b → /a")
            || errs[0].contains("requires cycle: /b → /a → /b"),
        "{errs:?}"
    );
}

#[test]
fn include_binds_the_included_parameters_for_its_subtree_only() {
    let inner = "name: inner\nparams:\n  node: {required: true}\n  tools: {type: list, default: [a]}\n  mode: {default: soft}\nphases:\n  - id: each\n    foreach: \"{{ tools }}\"\n    run: echo {{ node }} {{ item }} {{ mode }}\n";
    let outer = "name: outer\nparams:\n  target: {default: cp-2}\n  list: {default: [x, y]}\nphases:\n  - id: inc\n    description: about {{ target }}\n    include: {procedure: inner, with: {node: \"n-{{ target }}\", tools: \"{{ list }}\"}}\n  - id: after\n    requires: [/inc/each]\n    when: \"{{ target == 'cp-2' }}\"\n    run: echo {{ target }}\n";
    let p = Procedure::parse_with("outer.yaml", outer, None, &mut |name| {
        assert_eq!(name, "inner");
        Procedure::parse("inner.yaml", inner, None)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let params = p.resolve_params(&[]).unwrap();
    let plan = p
        .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
        .unwrap();
    let ids: Vec<&str> = plan.nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "/",
            "/inc",
            "/inc/each",
            "/inc/each/x",
            "/inc/each/y",
            "/after"
        ]
    );
    let x = plan.node(plan.find(&PhaseId::parse("/inc/each/x")).unwrap());
    assert_eq!(x.locals["node"], "n-cp-2");
    assert_eq!(x.locals["tools"], serde_json::json!(["x", "y"]));
    assert_eq!(x.locals["mode"], "soft");
    assert_eq!(x.locals["item"], "x");
    assert_eq!(x.when, None);
    let after = plan.node(plan.find(&PhaseId::parse("/after")).unwrap());
    assert!(after.locals.is_empty(), "{:?}", after.locals);
    assert_eq!(after.requires, [PhaseId::parse("/inc/each")]);
    assert_eq!(
        after.when.as_ref().map(|w| w.that.as_str()),
        Some("{{ target == 'cp-2' }}")
    );
    assert_eq!(plan.node(1).description, "about cp-2");
}

#[test]
fn secrets_are_kept_apart() {
    let p = parse("name: t\nparams:\n  token: {secret: true, required: true}\nphases:\n  - id: a\n    description: join with {{ token }}\n    run: echo {{ token }}\n").unwrap();
    let params = p.resolve_params(&["token=hunter2".into()]).unwrap();
    assert!(params.values.is_empty());
    let plan = p
        .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
        .unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert!(!json.contains("hunter2"));
    assert!(json.contains("join with <secret:token>"));
}
