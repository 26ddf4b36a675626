//! Format migration: a state directory written by format version 1 (tests/fixtures/v1-state,
//! made by the release before version 2) reads the same after migration — every operation's
//! plan, history, logs and export — resumes to the end, and a newer version is refused.

mod common;

use std::path::Path;

use common::Env;

const ACTIVE: &str = "20261203-135555-b79f";
const CLOSED: &str = "20261203-135553-b05b";
const TOKEN: &str = "tok-5e3c1f9a77";

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-state")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// An environment whose state directory is a copy of the version-1 fixture.
fn env_with_v1_state() -> Env {
    let env = Env::new();
    let state = env.state_dir();
    copy_dir(&fixture().join("medic.db"), &state.join("medic.db"));
    // git keeps no empty directory; sled expects its blobs directory.
    std::fs::create_dir_all(state.join("medic.db").join("blobs")).unwrap();
    std::fs::copy(
        fixture().join("medic.db.version"),
        state.join("medic.db.version"),
    )
    .unwrap();
    for p in ["fixture", "small"] {
        let yaml = std::fs::read_to_string(fixture().join("plans").join(format!("{p}.yaml")));
        env.procedure(p, &yaml.unwrap());
    }
    env
}

fn expected(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture().join("expected").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every field of `want` is in `got` with the same value (objects may have gained fields).
fn assert_contains(got: &serde_json::Value, want: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, v) in w {
                let Some(gv) = g.get(k) else {
                    panic!("{path}.{k} is missing; want {v}");
                };
                assert_contains(gv, v, &format!("{path}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: {got} vs {want}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_contains(gv, wv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

fn json_of(env: &Env, args: &[&str]) -> serde_json::Value {
    let out = env.medic(args).arg("-o").arg("json").run().code(0);
    assert!(!out.stdout.contains(TOKEN), "secret in {args:?}");
    out.json()
}

#[test]
fn a_version_1_database_reads_the_same_after_migration_and_resumes() {
    let env = env_with_v1_state();
    let marker = env.state_dir().join("medic.db.version");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "1");
    assert_contains(
        &json_of(&env, &["operations"]),
        &expected("operations.json"),
        "operations",
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "2");
    for op in [ACTIVE, CLOSED] {
        let sel = ["plan", "--operation", op];
        let with = |sub: &'static str| [&sel[..], &[sub]].concat();
        assert_contains(
            &json_of(&env, &sel),
            &expected(&format!("plan-{op}.json")),
            op,
        );
        for what in ["history", "logs", "export"] {
            assert_contains(
                &json_of(&env, &with(what)),
                &expected(&format!("{what}-{op}.json")),
                &format!("{what} of {op}"),
            );
        }
        // Text views decode the same records.
        env.medic(&with("history")).run().code(0);
        env.medic(&sel).arg("--short").run().code(0);
    }
    // The interrupted run resumes and finishes, with the captured values (a secret one too)
    // it had stored before the migration.
    let done = env.file("done");
    std::fs::write(&done, "").unwrap();
    env.medic(&["plan", "--operation", ACTIVE, "resume"])
        .env("FIXTURE_DONE", done.to_str().unwrap())
        .run()
        .code(0)
        .stdout_contains("finished preparing lab with <secret:session>")
        .stdout_lacks(TOKEN);
    let plan = json_of(&env, &["plan", "--operation", ACTIVE]);
    assert_eq!(plan["progress"]["completed"], 6, "{plan}");
    // History continues after the migrated entries, the actors of both eras intact.
    let history = json_of(&env, &["plan", "--operation", ACTIVE, "history"]);
    let entries = history["history"].as_array().unwrap();
    let old = expected(&format!("history-{ACTIVE}.json"))["history"]
        .as_array()
        .unwrap()
        .len();
    assert!(entries.len() > old, "{history}");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i, "{e}");
    }
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "lease_released", "{last}");
    assert!(
        last["command"].as_str().unwrap().contains("resume"),
        "{last}"
    );
    assert_eq!(entries[0]["reason"], "fixture run", "{history}");
    env.medic(&["plan", "--operation", ACTIVE, "export"])
        .run()
        .code(0)
        .stdout_contains("| `/finish` |  | /checks | completed |")
        .stdout_lacks(TOKEN);
    env.medic(&["plan", "--operation", ACTIVE, "complete"])
        .run()
        .code(0);
}

#[test]
fn a_newer_format_version_is_refused_and_left_alone() {
    let env = env_with_v1_state();
    let db_dir = env.state_dir().join("medic.db");
    {
        let db = sled::open(&db_dir).unwrap();
        db.insert(b"format_version", b"3".as_slice()).unwrap();
        db.flush().unwrap();
    }
    for args in [&["plan"][..], &["operations"], &["plan", "resume"]] {
        env.medic(args)
            .run()
            .code(2)
            .stderr_contains("format version 3 is not supported by this medic (it reads version 2); use the medic release that wrote it");
    }
    let db = sled::open(&db_dir).unwrap();
    assert_eq!(
        db.get(b"format_version").unwrap().as_deref(),
        Some(b"3".as_slice())
    );
    assert!(
        db.get(format!("plan/{ACTIVE}")).unwrap().is_some(),
        "a refused database must not be migrated"
    );
}
