//! Webhooks (`notify:` in the inventory): the run POSTs a JSON notice when it starts, pauses,
//! fails or completes, to a small HTTP receiver this test runs. A receiver that answers 500
//! first gets the notice again (retry); a receiver that is down or never answers is recorded
//! in history and the run still ends with its own exit code; no secret value is in any body;
//! a bad `notify:` is refused at load with its position.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{history, Env};

const SECRET: &str = "s3cr3t-token-value-42";

const PROC: &str = r#"
name: notified
params:
  token: {secret: true, required: true}
phases:
  - id: use
    run: echo using {{ token }} > /dev/null
  - id: fail
    run: echo bad token {{ token }} >&2; exit 1
"#;

const PLAIN: &str = r#"
name: plain
phases:
  - id: change
    run: echo changed >> "$WORK/ran"
"#;

/// One request the receiver got: its path and JSON body.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    body: serde_json::Value,
    raw: String,
}

/// An HTTP receiver on 127.0.0.1 answering 500 to its first request, 200 after.
fn receiver() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Some(r) = read_request(&stream) else {
                continue;
            };
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(r);
                seen.len() == 1
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = (&stream).write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, got)
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let raw = String::from_utf8_lossy(&body).to_string();
    Some(Received {
        path,
        body: serde_json::from_str(&raw).ok()?,
        raw,
    })
}

fn inventory(env: &Env, notify: &str) {
    std::fs::write(
        env.file("cluster.yaml"),
        format!("name: lab\nnodes:\n  - name: n1\nnotify:\n{notify}"),
    )
    .unwrap();
}

#[test]
fn notices_are_delivered_with_a_retry_and_carry_no_secret() {
    let env = Env::new();
    env.procedure("notified", PROC);
    std::fs::write(env.file("token"), SECRET).unwrap();
    let (port, got) = receiver();
    inventory(
        &env,
        &format!("  - url: http://127.0.0.1:{port}/hooks/T1\n    timeout: 5s\n"),
    );
    let out = env
        .medic(&["start", "notified", "--set-file", "token=token"])
        .run()
        .code(1);
    assert!(!out.stderr.contains("not delivered"), "{}", out.stderr);

    let got = got.lock().unwrap().clone();
    let events: Vec<&str> = got
        .iter()
        .map(|r| r.body["event"].as_str().unwrap())
        .collect();
    // The first `started` got a 500 and was sent again; then the failure.
    assert_eq!(events, ["started", "started", "failed"], "{got:#?}");
    assert!(got.iter().all(|r| r.path == "/hooks/T1"));
    let failed = &got[2].body;
    assert!(!failed["operation"].as_str().unwrap().is_empty());
    assert_eq!(failed["procedure"], "notified");
    assert_eq!(failed["phase"], "/fail");
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["cluster"], "lab");
    assert!(failed["who"].as_str().unwrap().contains('@'));
    let text = failed["text"].as_str().unwrap();
    assert!(
        text.contains("notified") && text.contains("failed at /fail") && !text.contains('\n'),
        "{text}"
    );
    for r in &got {
        assert!(!r.raw.contains(SECRET), "secret in a notice: {}", r.raw);
    }
    assert!(history(&env).iter().all(|e| e["event"] != "notify_failed"));
}

#[test]
fn a_receiver_down_or_silent_is_recorded_and_the_run_goes_on() {
    let env = Env::new();
    env.procedure("plain", PLAIN);
    // One port nobody listens on, one listener that accepts and never answers.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = down.local_addr().unwrap().port();
    drop(down);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    inventory(
        &env,
        &format!(
            "  - url: http://127.0.0.1:{down_port}/hooks/PATH-SECRET\n    events: [completed]\n    timeout: 1s\n  - url: http://127.0.0.1:{silent_port}/x\n    events: [started]\n    timeout: 1s\n"
        ),
    );
    let out = env.medic(&["start", "plain"]).run().code(0);
    assert_eq!(env.read("ran"), "changed\n");
    assert!(out.stderr.contains("not delivered"), "{}", out.stderr);
    let failed: Vec<String> = history(&env)
        .into_iter()
        .filter(|e| e["event"] == "notify_failed")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(
        failed.iter().any(|d| d.contains(&format!(
            "notice `completed` to http://127.0.0.1:{down_port} not delivered"
        ))),
        "{failed:#?}"
    );
    // The silent one still had its notice in flight at exit: medic waited 1s, not longer.
    assert!(
        failed
            .iter()
            .any(|d| d.contains("still in flight when medic exited (waited 1s)")),
        "{failed:#?}"
    );
    // A webhook's path (often its token) is not written down.
    assert!(
        failed.iter().all(|d| !d.contains("PATH-SECRET")),
        "{failed:#?}"
    );
}

#[test]
fn a_bad_notify_list_is_refused_with_its_position() {
    let env = Env::new();
    env.procedure("plain", PLAIN);
    inventory(
        &env,
        "  - url: ftp://127.0.0.1/x\n    events: [started, bogus]\n    timeout: 2m\n  - events: [failed]\n",
    );
    env.medic(&["start", "plain"])
        .run()
        .code(2)
        .stderr_contains(
            "cluster.yaml:5:10: notify.url: only http:// and https:// URLs are supported",
        )
        .stderr_contains("cluster.yaml:6:23: unknown notify event `bogus`")
        .stderr_contains("notify.timeout must be at most 60s")
        .stderr_contains("every notify entry needs a `url:`");
    assert_eq!(env.read("ran"), "");
}

#[test]
fn a_pause_is_notified_to_the_webhooks_that_subscribe_to_it() {
    let env = Env::new();
    env.procedure(
        "paused",
        "name: paused\nphases:\n  - id: before\n    run: 'true'\n  - id: wait\n    pause: do the manual step\n  - id: after\n    run: 'true'\n",
    );
    let (port, got) = receiver();
    inventory(
        &env,
        &format!("  - url: http://127.0.0.1:{port}/p\n    events: [paused]\n"),
    );
    env.medic(&["start", "paused"])
        .run()
        .code(0)
        .stdout_contains("paused before /wait");
    let got = got.lock().unwrap().clone();
    // Only the pause (no start, no completion), the 500 retried.
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|r| {
            (
                r.body["event"].as_str().unwrap(),
                r.body["phase"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("paused", "/wait"), ("paused", "/wait")], "{got:#?}");
}
