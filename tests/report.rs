//! `medic report` end to end on drill clusters: the bundle's layout and manifest, `report
//! verify` (and a changed byte caught), secrets and bootstrap-token patterns absent from every
//! file, a lost node recorded as unreachable, and `--operation`, `--since`, `--node`,
//! `--only`, `--max-file-size`, `--dry-run`.

mod common;

use std::path::{Path, PathBuf};

use common::drill::DrillCluster;
use sha2::{Digest, Sha256};

/// `medic report -f NAME` (exit `code`); the bundle's path.
fn report(drill: &DrillCluster, name: &str, args: &[&str], code: i32) -> (PathBuf, common::Output) {
    let path = drill.env.file(name);
    let mut full = vec!["report", "-f", path.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = drill.medic(&full).run().no_panic().code(code);
    (path, out)
}

/// Extracts a bundle; the top directory it holds.
fn extract(bundle: &Path) -> PathBuf {
    let dir = bundle.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("tar")
        .arg("xzf")
        .arg(bundle)
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let tops: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tops.len(), 1, "one top directory: {tops:?}");
    tops[0].clone()
}

fn manifest(top: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(top.join("MANIFEST.json")).unwrap()).unwrap()
}

fn items(m: &serde_json::Value) -> &Vec<serde_json::Value> {
    m["items"].as_array().unwrap()
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn dirs_under(top: &Path, sub: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(top.join(sub))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_full_report_has_its_layout_and_every_sha256_verifies_until_a_byte_changes() {
    let drill = DrillCluster::up(&[]);
    let (bundle, out) = report(&drill, "full.tar.gz", &[], 0);
    assert!(out.stdout.contains("wrote "), "{}", out.stdout);
    let top = extract(&bundle);
    for part in ["api", "etcd", "medic", "nodes", "MANIFEST.json"] {
        assert!(top.join(part).exists(), "no {part} in {:?}", files(&top));
    }
    assert_eq!(
        dirs_under(&top, "nodes"),
        ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]
    );
    for f in [
        "api/nodes.json",
        "api/pods-kube-system.json",
        "etcd/members.json",
        "etcd/status.json",
        "etcd/health.json",
        "etcd/alarms.json",
        "medic/inventory.yaml",
        "medic/status.json",
        "nodes/cp-1/ps.txt",
        "nodes/cp-1/df.txt",
    ] {
        assert!(top.join(f).is_file(), "no {f} in {:?}", files(&top));
    }
    let members: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join("etcd/members.json")).unwrap()).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 3, "{members}");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join("medic/status.json")).unwrap()).unwrap();
    assert_eq!(status["status"], "healthy", "{status}");

    // The manifest lists every file with its sha256, and each one matches.
    let m = manifest(&top);
    assert_eq!(m["medic_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        m["command_line"].as_str().unwrap().contains("report"),
        "{m}"
    );
    let mut listed: Vec<String> = Vec::new();
    for i in items(&m) {
        for key in [
            "source",
            "command",
            "exit_code",
            "bytes",
            "truncated",
            "duration_ms",
            "error",
        ] {
            assert!(i.get(key).is_some(), "item lacks {key}: {i}");
        }
        let Some(path) = i["path"].as_str() else {
            continue;
        };
        let data = std::fs::read(top.join(path)).unwrap();
        let sha: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(i["sha256"], sha, "{path}");
        assert_eq!(i["bytes"], data.len(), "{path}");
        listed.push(path.to_string());
    }
    listed.sort();
    let mut on_disk = files(&top);
    on_disk.retain(|f| f != "MANIFEST.json");
    assert_eq!(listed, on_disk);
    // A failing command is recorded with its exit code and stderr, not silently dropped.
    assert!(
        items(&m)
            .iter()
            .any(|i| i["source"] == "node" && i["error"].is_string()),
        "{m:#}"
    );

    drill
        .medic(&["report", "verify", bundle.to_str().unwrap()])
        .run()
        .code(0)
        .stdout_contains("files match MANIFEST.json");

    // One byte changed in one file: verify fails naming it.
    let victim = top.join("nodes/cp-2/df.txt");
    let mut data = std::fs::read(&victim).unwrap();
    data[0] ^= 1;
    std::fs::write(&victim, data).unwrap();
    let tampered = drill.env.file("tampered.tar.gz");
    let parent = top.parent().unwrap();
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tampered)
        .arg("-C")
        .arg(parent)
        .arg(top.file_name().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    drill
        .medic(&["report", "verify", tampered.to_str().unwrap()])
        .run()
        .code(1)
        .stdout_contains("nodes/cp-2/df.txt: sha256");
}

#[test]
fn scope_options_select_what_is_collected() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "1"]);

    // --dry-run lists per node and source, writes nothing.
    let (bundle, out) = report(&drill, "dry.tar.gz", &["--dry-run"], 0);
    assert!(!bundle.exists());
    for shown in [
        "nodes/cp-1/journal-kubelet.log",
        "journalctl -u kubelet",
        "ssh ",
        "api/nodes.json",
        "etcd/members.json",
    ] {
        assert!(
            out.stdout.contains(shown),
            "`{shown}` missing in\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains(".key"), "{}", out.stdout);

    // A command missing on the node (shell exit 127) and one that fails (exit 3): both
    // recorded with their real exit code and stderr tail, the other files still collected.
    let bin = drill.dir.join("bin");
    std::fs::write(
        bin.join("lsmod"),
        "#!/bin/sh\nexec medic-test-no-such-command \"$@\"\n",
    )
    .unwrap();
    std::fs::write(
        bin.join("free"),
        "#!/bin/sh\necho 'free: cannot read /proc/meminfo' >&2\nexit 3\n",
    )
    .unwrap();
    for shim in ["lsmod", "free"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join(shim), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // --node and --only: one node's system group, nothing else.
    let (bundle, _) = report(
        &drill,
        "one.tar.gz",
        &["--node", "worker-1", "--only", "system"],
        0,
    );
    let top = extract(&bundle);
    assert_eq!(dirs_under(&top, "nodes"), ["worker-1"]);
    for absent in ["api", "etcd", "medic"] {
        assert!(
            !top.join(absent).exists(),
            "{absent} collected: {:?}",
            files(&top)
        );
    }
    let m = manifest(&top);
    let by_path = |path: &str| {
        items(&m)
            .iter()
            .find(|i| i["command"].as_str().unwrap().starts_with(path))
            .unwrap_or_else(|| panic!("no {path} in {m:#}"))
            .clone()
    };
    let missing = by_path("lsmod");
    assert_eq!(missing["exit_code"], 127, "{missing}");
    assert!(
        missing["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("medic-test-no-such-command: not found"),
        "{missing}"
    );
    assert!(
        missing["error"].as_str().unwrap().contains("127"),
        "{missing}"
    );
    let failed = by_path("free");
    assert_eq!(failed["exit_code"], 3, "{failed}");
    assert_eq!(failed["stderr_tail"], "free: cannot read /proc/meminfo");
    assert_eq!(by_path("ps auxww")["exit_code"], 0);
    assert!(top.join("nodes/worker-1/ps.txt").is_file());
    std::fs::remove_file(bin.join("lsmod")).unwrap();
    std::fs::remove_file(bin.join("free")).unwrap();
    // An unknown node is bad input.
    drill
        .medic(&["report", "--node", "nope", "--dry-run"])
        .run()
        .code(2)
        .stderr_contains("--node nope");

    // --since a time: the window in the manifest and on journalctl's command line.
    let (bundle, _) = report(
        &drill,
        "since.tar.gz",
        &["--since", "2026-01-02 03:04:05", "--only", "system"],
        0,
    );
    let m = manifest(&extract(&bundle));
    assert_eq!(m["since"], "2026-01-02T03:04:05Z");
    let journal = items(&m)
        .iter()
        .find(|i| i["path"] == "nodes/cp-1/journal-kubelet.log")
        .unwrap_or_else(|| panic!("{m:#}"));
    assert!(
        journal["command"]
            .as_str()
            .unwrap()
            .contains("--since @1767323045"),
        "{journal}"
    );

    // --max-file-size: a larger file keeps its tail and is marked truncated.
    let (bundle, _) = report(
        &drill,
        "small.tar.gz",
        &["--only", "medic", "--max-file-size", "300"],
        0,
    );
    let top = extract(&bundle);
    let kept = std::fs::read_to_string(top.join("medic/inventory.yaml")).unwrap();
    let whole = std::fs::read_to_string(drill.dir.join("cluster.yaml")).unwrap();
    assert!(whole.len() > 300);
    assert!(kept.len() <= 300 && !kept.is_empty(), "{kept}");
    assert!(whole.ends_with(&kept), "not the tail:\n{kept}");
    let m = manifest(&top);
    let item = items(&m)
        .iter()
        .find(|i| i["path"] == "medic/inventory.yaml")
        .unwrap();
    assert_eq!(item["truncated"], true, "{item}");

    // --max-size: collecting stops when the budget is spent, with a note.
    let (bundle, out) = report(
        &drill,
        "budget.tar.gz",
        &["--only", "medic", "--max-size", "100"],
        0,
    );
    let m = manifest(&extract(&bundle));
    let notes = m["notes"].to_string();
    assert!(notes.contains("--max-size"), "{m:#}");
    assert!(out.stderr.contains("total budget"), "{}", out.stderr);
    let written: u64 = items(&m).iter().map(|i| i["bytes"].as_u64().unwrap()).sum();
    assert!(written <= 100, "{written}");

    // -o json: the dry-run as data.
    let v = drill
        .medic(&["-o", "json", "report", "--dry-run", "--only", "etcd"])
        .run()
        .code(0)
        .json();
    let planned = v["collect"].as_array().unwrap();
    assert_eq!(planned.len(), 4, "{v:#}");
    assert!(
        planned
            .iter()
            .all(|p| p["group"] == "etcd" && p["source"] == "etcd"),
        "{v:#}"
    );
}

#[test]
fn a_lost_node_is_recorded_unreachable_and_the_rest_is_collected() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "2"]);
    drill
        .medic(&["drill", "break", "node-lost", "worker-2"])
        .run()
        .code(0);
    let (bundle, out) = report(&drill, "lost.tar.gz", &["--timeout", "20s"], 0);
    assert!(
        out.stderr.contains("warning: node worker-2 unreachable"),
        "{}",
        out.stderr
    );
    let top = extract(&bundle);
    assert_eq!(dirs_under(&top, "nodes"), ["cp-1", "worker-1"]);
    assert!(top.join("api/nodes.json").is_file());
    let m = manifest(&top);
    let lost: Vec<_> = items(&m)
        .iter()
        .filter(|i| i["node"] == "worker-2")
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["unreachable"], true);
    assert!(lost[0]["error"].is_string());

    // Nothing at all to collect: exit 1, and no bundle left behind.
    let (bundle, out) = report(
        &drill,
        "none.tar.gz",
        &["--node", "worker-2", "--only", "system"],
        1,
    );
    assert!(
        out.stderr.contains("nothing could be collected"),
        "{}",
        out.stderr
    );
    assert!(!bundle.exists());
    assert!(!drill.env.file("none.tar.gz.partial").exists());
}

const BOOTSTRAP: &str = "abcdef.0123456789abcdef";
/// A bootstrap token medic never saw: only the patterns can remove it.
const UNKNOWN: &str = "zyxwvu.9876543210zyxwvu";

/// A procedure on one node with a secret parameter: it prints a join command with the
/// token (stored redacted) and captures a value derived from it (a secret capture).
const PROCEDURE: &str = r#"name: leaky
params:
  token: {secret: true, required: true}
phases:
  - id: join
    ssh: {on: worker-1, run: "echo kubeadm join --token {{ token }}"}
  - id: derive
    ssh: {on: worker-1, run: "printf %s {{ token }} | rev"}
    capture: {reversed: "stdout | trim"}
"#;

#[test]
fn no_secret_and_no_bootstrap_token_reaches_the_bundle_and_operation_scopes_it() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "2"]);
    drill.env.procedure("leaky", PROCEDURE);
    std::fs::write(drill.env.file("token"), BOOTSTRAP).unwrap();
    let run = drill
        .medic(&["-o", "json", "start", "leaky", "--set-file", "token=token"])
        .run()
        .code(0);
    let op = run.json()["operation"].as_str().unwrap().to_string();
    let reversed: String = BOOTSTRAP.chars().rev().collect();

    // The secrets reach what the bundle collects: a node's annotations (the derived value,
    // which only medic's own secrets know) and a process's command line (a token medic never
    // saw, which only the bootstrap-token and `--token` patterns find).
    drill
        .kubectl(&["annotate", "node", "cp-1", &format!("leak={reversed}")])
        .code(0);
    let mut ps = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("exec -a 'kubeadm join --token {UNKNOWN}' sleep 120"),
        ])
        .spawn()
        .unwrap();
    let (bundle, _) = report(
        &drill,
        "secrets.tar.gz",
        &[
            "--only",
            "system",
            "--only",
            "kubernetes",
            "--only",
            "medic",
        ],
        0,
    );
    let (scoped, _) = report(&drill, "op.tar.gz", &["--operation", &op], 0);
    let _ = ps.kill();
    let _ = ps.wait();

    let pattern = regex::Regex::new(r"[a-z0-9]{6}\.[a-z0-9]{16}").unwrap();
    for b in [&bundle, &scoped] {
        let top = extract(b);
        for f in files(&top) {
            let text = String::from_utf8_lossy(&std::fs::read(top.join(&f)).unwrap()).into_owned();
            assert!(!text.contains(BOOTSTRAP), "token in {f}");
            assert!(!text.contains(UNKNOWN), "unknown token in {f}");
            assert!(!text.contains(&reversed), "derived secret in {f}");
            assert!(
                pattern.find(&text).is_none(),
                "bootstrap-token pattern in {f}: {:?}",
                pattern.find(&text)
            );
        }
    }
    // The values were there to be removed: placeholders stand where they were.
    let top = extract(&bundle);
    let nodes = std::fs::read_to_string(top.join("api/nodes.json")).unwrap();
    assert!(
        nodes.contains("<secret:"),
        "annotation not redacted as a known secret"
    );
    let ps_out = std::fs::read_to_string(top.join("nodes/worker-1/ps.txt")).unwrap();
    assert!(ps_out.contains("--token <redacted>"), "{ps_out}");

    // --operation: the nodes its plan touched, its window, its plan, history and logs.
    let top = extract(&scoped);
    assert_eq!(dirs_under(&top, "nodes"), ["worker-1"]);
    for f in ["plan.json", "plan.md", "history.json", "logs.json"] {
        assert!(
            top.join("medic/operations").join(&op).join(f).is_file(),
            "no {f}: {:?}",
            files(&top)
        );
    }
    let m = manifest(&top);
    assert_eq!(m["operation"], op);
    let since = humantime::parse_rfc3339(m["since"].as_str().unwrap()).unwrap();
    let until = humantime::parse_rfc3339(m["until"].as_str().unwrap()).unwrap();
    let span = until.duration_since(since).unwrap().as_secs();
    assert!((20 * 60..25 * 60).contains(&span), "window of {span}s");
    let logs =
        std::fs::read_to_string(top.join("medic/operations").join(&op).join("logs.json")).unwrap();
    assert!(logs.contains("kubeadm join --token"), "{logs}");
}

/// The reasons of the events in `api/events.json` about `object`.
fn event_reasons(top: &Path, object: &str) -> Vec<String> {
    let events: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join("api/events.json")).unwrap()).unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == object)
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn events_of_a_drain_are_in_the_bundle_and_since_excludes_older_ones() {
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "2"]);
    drill.kubectl(&["cordon", "worker-1"]).code(0);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let drain = drill.kubectl(&[
        "drain",
        "worker-2",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    assert_eq!(drain.code, 0, "{}\n{}", drain.stdout, drain.stderr);
    // kubectl reads them too.
    let listed = drill.kubectl(&["get", "events", "-A"]).code(0);
    for shown in ["NodeNotSchedulable", "node/worker-2", "Killing"] {
        assert!(listed.stdout.contains(shown), "{shown}: {}", listed.stdout);
    }

    // Every event, without --since: both cordons, the drained pods stopping.
    let (bundle, _) = report(&drill, "all-events.tar.gz", &["--only", "kubernetes"], 0);
    let top = extract(&bundle);
    assert_eq!(event_reasons(&top, "worker-1"), ["NodeNotSchedulable"]);
    assert_eq!(event_reasons(&top, "worker-2"), ["NodeNotSchedulable"]);
    let events = std::fs::read_to_string(top.join("api/events.json")).unwrap();
    assert!(events.contains("\"Killing\""), "{events}");

    // --since between the two: the drain's events only.
    let (bundle, _) = report(
        &drill,
        "since-events.tar.gz",
        &["--only", "kubernetes", "--since", &since],
        0,
    );
    let top = extract(&bundle);
    assert!(event_reasons(&top, "worker-1").is_empty());
    assert_eq!(event_reasons(&top, "worker-2"), ["NodeNotSchedulable"]);
    let events = std::fs::read_to_string(top.join("api/events.json")).unwrap();
    assert!(events.contains("\"Killing\""), "{events}");
}
