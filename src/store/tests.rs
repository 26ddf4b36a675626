//! Unit tests of the store: logs, leases, commits, damage and identity checks.

use super::logs::LOG_TAIL_BYTES;
use super::migrate::upgrade_legacy_record;
use super::open::sweep_read_copies;
use super::records::LEASE_STALE_MS;
use super::*;
use crate::action::Stream;
use crate::plan::FailureKind;

/// Every log line of operation `id`, read batch by batch as `medic plan logs` does.
fn all_logs(store: &mut Store, id: &str) -> Result<Vec<LogLine>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (lines, next) = store.logs_after(id, after.as_deref(), usize::MAX)?;
        out.extend(lines);
        match next {
            Some(k) => after = Some(k),
            None => return Ok(out),
        }
    }
}

#[test]
fn read_copies_of_dead_processes_are_swept_and_live_ones_kept() {
    let tmp = std::env::temp_dir();
    let dead = tmp.join("medic-read-4294967290-1");
    let live = tmp.join(format!("medic-read-{}-1", std::process::id()));
    for d in [&dead, &live] {
        std::fs::create_dir_all(d.join("medic.db")).unwrap();
    }
    sweep_read_copies();
    assert!(!dead.exists(), "a dead process's copy stays");
    assert!(live.exists(), "a live process's copy was removed");
    std::fs::remove_dir_all(live).unwrap();
}

fn line(phase: &str, text: &str) -> LogLine {
    LogLine {
        time: 1,
        phase: PhaseId::parse(phase),
        stream: Stream::Stdout,
        text: text.to_string(),
    }
}

#[test]
fn output_cap_keeps_head_and_tail_and_counts_the_middle() {
    let mut cap = OutputCap::default();
    let text = "z".repeat(1023); // 1 KiB a line with its newline
    let admitted = (0..3000)
        .filter(|_| cap.admit(line("/p", &text)).is_some())
        .count();
    assert_eq!(admitted, LOG_HEAD_BYTES / 1024);
    let rest = cap.finish(&PhaseId::parse("/p"));
    assert_eq!(rest[0].stream, Stream::Medic);
    let dropped = 3000 - admitted - (LOG_TAIL_BYTES / 1024);
    assert!(
        rest[0]
            .text
            .contains(&format!("{} bytes ({dropped} lines)", dropped * 1024)),
        "{}",
        rest[0].text
    );
    assert_eq!(rest.len() - 1, LOG_TAIL_BYTES / 1024);
    // Small output goes through whole, with no marker.
    assert!(cap.admit(line("/p", "short")).is_some());
    assert!(cap.finish(&PhaseId::parse("/p")).is_empty());
}

#[test]
fn logs_are_stored_in_chunks_and_read_in_batches_with_old_single_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), Access::Create).unwrap();
    // A database written before chunks holds one line per key.
    let old = line("/old", "legacy");
    store
        .db()
        .unwrap()
        .insert(seq_key("log", "op", 0), encode(&old))
        .unwrap();
    let mut logs: Vec<LogLine> = (0..1200).map(|i| line("/a", &i.to_string())).collect();
    logs.push(line("/b", "other phase"));
    store
        .commit(
            "op",
            Commit {
                logs: logs.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let prefix = b"log/op/".as_slice();
    let keys = store.db().unwrap().scan_prefix(prefix).count();
    assert_eq!(
        keys,
        1 + 3 + 1,
        "legacy line, 1200 lines in 3 chunks, one for /b"
    );
    let mut want = vec![old];
    want.extend(logs);
    assert_eq!(all_logs(&mut store, "op").unwrap(), want);
    let (first, next) = store.logs_after("op", None, 600).unwrap();
    assert_eq!(first.len(), 1 + 512 + 512);
    let (rest, end) = store.logs_after("op", next.as_deref(), 600).unwrap();
    assert_eq!(rest.len(), 1200 - 1024 + 1);
    assert!(end.is_none());
}

#[test]
fn lease_of_this_process_is_alive_and_of_a_dead_pid_is_not() {
    let me = Lease {
        pid: std::process::id(),
        host: hostname(),
        user: username(),
        started_at: now_ms(),
        heartbeat_at: now_ms(),
        proc_start: process_start_ticks(std::process::id()),
        command: "test".into(),
        store_alive: None,
    };
    assert!(me.is_alive());
    let reused = Lease {
        proc_start: me.proc_start.map(|s| s + 1),
        ..me.clone()
    };
    assert!(
        !reused.is_alive(),
        "a reused pid must not count as the holder"
    );
    let remote_stale = Lease {
        host: "elsewhere.invalid".into(),
        heartbeat_at: now_ms() - LEASE_STALE_MS - 1,
        ..me
    };
    assert!(!remote_stale.is_alive());
}

#[test]
fn commit_is_durable_and_sequenced() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), Access::Create).unwrap();
    let actor = Actor {
        user: "u".into(),
        host: "h".into(),
        pid: 1,
        command: "c".into(),
    };
    let entry = |event: &str| HistoryEntry {
        time: 1,
        ..HistoryEntry::new(event, &actor, None)
    };
    store
        .commit(
            "op1",
            Commit {
                history: vec![entry("a"), entry("b")],
                ..Default::default()
            },
        )
        .unwrap();
    drop(store);
    let mut store = Store::open_with(dir.path(), Access::Create).unwrap();
    store
        .commit(
            "op1",
            Commit {
                history: vec![entry("c")],
                ..Default::default()
            },
        )
        .unwrap();
    let h = store.history("op1").unwrap();
    let seqs: Vec<(u64, &str)> = h.iter().map(|e| (e.seq, e.event.as_str())).collect();
    assert_eq!(seqs, [(0, "a"), (1, "b"), (2, "c")]);
}

#[test]
fn a_snapshot_left_half_written_by_a_killed_process_does_not_damage_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), Access::Create).unwrap();
    store
        .commit(
            "op1",
            Commit {
                vars: Some(serde_json::Map::from_iter([("k".into(), "v".into())])),
                ..Default::default()
            },
        )
        .unwrap();
    drop(store);
    // What sled leaves when killed while writing a snapshot (it reads such files on open).
    let partial = dir
        .path()
        .join("medic.db")
        .join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"half a snapshot").unwrap();
    let mut store =
        Store::open_with(dir.path(), Access::Create).expect("opens despite the partial snapshot");
    assert_eq!(store.vars("op1").unwrap()["k"], "v");
    assert!(!partial.exists());
}

#[test]
fn a_missing_version_with_a_marker_is_damage_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open_with(dir.path(), Access::Create).unwrap());
    std::fs::remove_dir_all(dir.path().join("medic.db")).unwrap();
    let err = Store::open_with(dir.path(), Access::Create)
        .err()
        .expect("must refuse");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
}

#[test]
fn reading_a_missing_state_dir_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for access in [Access::Read, Access::Write] {
        let err = Store::open_with(&state, access).err().expect("must refuse");
        assert!(matches!(err, StoreError::NoStateDir { .. }), "{err}");
    }
    assert!(!state.exists());
    std::fs::create_dir(&state).unwrap();
    let err = Store::open_with(&state, Access::Read)
        .err()
        .expect("must refuse");
    assert!(matches!(err, StoreError::NoDatabase { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    // `medic start` creates it, owner only.
    drop(Store::open_with(&dir.path().join("new"), Access::Create).unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("new"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn io_errors_are_classified_by_what_to_do() {
    let dir = Path::new("/x/state");
    let cases = [
        (libc::EROFS, "ReadOnly"),
        (libc::ENOSPC, "DiskFull"),
        (libc::EDQUOT, "DiskFull"),
        (libc::EACCES, "PermissionDenied"),
        (libc::EPERM, "PermissionDenied"),
        (libc::EIO, "Io"),
    ];
    for (code, want) in cases {
        let err = classify_io(dir, std::io::Error::from_raw_os_error(code));
        let got = format!("{err:?}");
        assert!(got.starts_with(want), "errno {code}: {got}");
        assert!(!err.to_string().contains("is damaged"), "{err}");
        assert!(err.to_string().contains("/x/state"), "{err}");
    }
    // sled reports a flush error again with only its kind and text.
    let again = std::io::Error::other(format!(
        "{:?}",
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    ));
    assert!(matches!(
        classify_io(dir, again),
        StoreError::DiskFull { .. }
    ));
}

#[test]
fn a_store_whose_directory_was_deleted_or_replaced_refuses_every_access() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let aside = dir.path().join("aside");
    // Deleted (moved away): gone, and nothing is recreated.
    let mut store = Store::open_with(&state, Access::Create).unwrap();
    store.release();
    std::fs::rename(&state, &aside).unwrap();
    let err = store.operations().expect_err("must refuse");
    assert!(matches!(err, StoreError::Gone { .. }), "{err}");
    assert!(!state.exists(), "recreated");
    // Once lost, it stays lost, even when the directory comes back.
    std::fs::rename(&aside, &state).unwrap();
    let err = store.operations().expect_err("must refuse");
    assert!(matches!(err, StoreError::Gone { .. }), "{err}");
    // Replaced by another database while released.
    let mut store = Store::open_with(&state, Access::Create).unwrap();
    store.release();
    std::fs::rename(&state, &aside).unwrap();
    drop(Store::open_with(&state, Access::Create).unwrap());
    let err = store.operations().expect_err("must refuse");
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
    // Replaced while held: the commit lands in the old files and is reported.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(&aside, &state).unwrap();
    let mut store = Store::open_with(&state, Access::Create).unwrap();
    std::fs::rename(&state, &aside).unwrap();
    drop(Store::open_with(&state, Access::Create).unwrap());
    let err = store
        .commit(
            "op",
            Commit {
                vars: Some(serde_json::Map::new()),
                ..Default::default()
            },
        )
        .expect_err("must refuse");
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
}

#[test]
fn this_process_is_not_stopped() {
    assert!(!process_is_stopped(std::process::id()));
}

#[test]
fn unknown_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), Access::Create).unwrap();
    store
        .db()
        .unwrap()
        .insert(VERSION_KEY, b"99".as_slice())
        .unwrap();
    store.release();
    let err = Store::open_with(dir.path(), Access::Create)
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[test]
fn records_of_old_databases_get_their_typed_skip_reason_and_node_failures() {
    let mut skipped: PhaseRecord = serde_json::from_str(
        r#"{"state":"completed","skipped":true,"summary":"skipped: n1 is not Ready"}"#,
    )
    .unwrap();
    upgrade_legacy_record(&mut skipped);
    assert_eq!(skipped.skip_reason.as_deref(), Some("n1 is not Ready"));
    let mut failed: PhaseRecord = serde_json::from_str(
        r#"{"state":"failed","failure":"other","error":"1 of 2 nodes failed: n3 exited with code 7"}"#,
    )
    .unwrap();
    upgrade_legacy_record(&mut failed);
    assert_eq!(
        failed.failure,
        Some(FailureKind::NodesFailed {
            failed: 1,
            total: 2
        })
    );
    let mut other: PhaseRecord =
        serde_json::from_str(r#"{"state":"failed","failure":"other","error":"disk full"}"#)
            .unwrap();
    upgrade_legacy_record(&mut other);
    assert_eq!(other.failure, Some(FailureKind::Other));
    assert_eq!(other.skip_reason, None);
}
