//! `medic status --watch` on a real terminal (tmux) on a drill: it refreshes in place, a break
//! between two refreshes shows up, Ctrl-C ends it with the last report's exit code, and the
//! terminal going away (the tmux session killed: SIGHUP) ends it too, with no SSH master left.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::drill::DrillCluster;

/// Waits until `ready` holds, for at most `secs`; `what` and `show` explain a timeout.
fn wait_until(secs: u64, what: &str, mut ready: impl FnMut() -> bool, show: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}:\n{}", show());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of ssh master processes (`ssh … -M …`) that use the drill's key.
fn ssh_masters(drill_dir: &Path) -> Vec<String> {
    let key = drill_dir.join("ssh/user_key").display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("ssh"))
            && args.iter().any(|a| a == "-M")
            && args.iter().any(|a| a.contains(&key))
        {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn watch_redraws_a_break_in_place_and_ends_on_ctrl_c_and_on_hangup() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let drill = DrillCluster::up(&["--control-planes", "1", "--workers", "1"]);
    let dir = drill.env.path().to_path_buf();
    // No master kept after a run (`ssh.persist: 0`), so none may be left when medic is gone.
    let inventory = std::fs::read_to_string(drill.dir.join("cluster.yaml")).unwrap();
    std::fs::write(
        dir.join("watch.yaml"),
        inventory.replacen("ssh:\n", "ssh:\n  persist: 0\n", 1),
    )
    .unwrap();
    let socket = dir.join("tmux.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    // `exec` so that the recorded pid is medic's; `then` runs after medic in the other session.
    let command = |name: &str, exec: bool, then: &str| {
        format!(
            "cd '{d}' && echo $$ > '{d}/{name}.pid' && {exec}env MEDIC_STATE_DIR='{d}/state' MEDIC_PLANS_DIR='{d}/plans' MEDIC_INVENTORY='{d}/watch.yaml' MEDIC_DRILL_DIR='{d}/drill' NO_COLOR=1 '{medic}' status --watch --interval 1s --only node/{then}",
            d = dir.display(),
            exec = if exec { "exec " } else { "" },
            medic = env!("CARGO_BIN_EXE_medic"),
        )
    };
    let start = |name: &str, command: String| {
        assert!(tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "60",
            "-s",
            name,
            &command
        ])
        .status
        .success());
    };
    let screen = |name: &str| {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    };

    // 1. It refreshes, and a break between two refreshes shows up in place.
    let code_file = dir.join("watch.code");
    start(
        "watch",
        command(
            "watch",
            false,
            &format!("; echo $? > '{}'; sleep 60", code_file.display()),
        ),
    );
    wait_until(
        30,
        "no healthy report",
        || {
            let s = screen("watch");
            s.contains("healthy: ") && s.contains("(refreshing every 1s; Ctrl-C to stop)")
        },
        || screen("watch"),
    );
    drill
        .medic(&["drill", "break", "kubelet-down", "worker-1"])
        .run()
        .code(0);
    wait_until(
        30,
        "the break did not show up",
        || {
            let s = screen("watch");
            s.contains("worker-1: kubelet is inactive") && s.starts_with("degraded: ")
        },
        || screen("watch"),
    );
    // Redrawn in place: the earlier report is gone from the screen.
    assert!(
        !screen("watch").contains("healthy: "),
        "{}",
        screen("watch")
    );

    // 2. Ctrl-C ends it, with the last report's exit code (degraded: 1).
    tmux(&["send-keys", "-t", "watch", "C-c"]);
    wait_until(
        15,
        "Ctrl-C did not end the watch",
        || std::fs::read_to_string(&code_file).is_ok_and(|c| !c.is_empty()),
        || screen("watch"),
    );
    assert_eq!(std::fs::read_to_string(&code_file).unwrap().trim(), "1");
    assert!(!screen("watch").contains("panicked"), "{}", screen("watch"));

    // 3. The terminal goes away (its session killed): medic ends, no SSH master left behind.
    start("gone", command("gone", true, ""));
    wait_until(
        30,
        "no report in the second session",
        || screen("gone").starts_with("degraded: "),
        || screen("gone"),
    );
    let pid = std::fs::read_to_string(dir.join("gone.pid")).unwrap();
    let proc_dir = Path::new("/proc").join(pid.trim());
    assert!(proc_dir.exists());
    assert!(tmux(&["kill-session", "-t", "gone"]).status.success());
    wait_until(
        15,
        "medic outlived its terminal",
        || !proc_dir.exists(),
        || format!("pid {pid}"),
    );
    let _ = tmux(&["kill-server"]);
    wait_until(
        10,
        "ssh masters left",
        || ssh_masters(&drill.dir).is_empty(),
        || format!("{:?}", ssh_masters(&drill.dir)),
    );
}
