//! The state directory stays small through a long run: the executor lets sled reclaim the log
//! segments its superseded transitions leave behind (`src/store/open.rs`, `GC_EVERY_MS`).
//!
//! Without reclaiming, 3,000 quick phases leave a 5.8 MB sled log (each transition a fragment
//! that is never freed, plus the rewritten pages); with it the log is about 40% smaller. The
//! bound sits between the two, and every phase must still be completed and readable.

mod common;

use common::Env;

const PHASES: usize = 3000;
/// Between what the run leaves with reclaiming (3.7 MB, release build) and without (5.8 MB:
/// deterministic, sled writes the same bytes however fast the run goes).
const MAX_DB_BYTES: u64 = 5_000_000;

#[test]
fn a_long_run_leaves_a_compact_state_dir() {
    let env = Env::new();
    let mut yaml = String::from("name: long\nphases:\n");
    for i in 0..PHASES {
        yaml.push_str(&format!("  - id: c{i}\n    check: \"true\"\n"));
    }
    env.procedure("long", &yaml);
    env.medic(&["start", "long"])
        .run()
        .code(0)
        .stdout_contains("every phase completed");

    let data = env.state_dir().join("medic.db").join("db");
    let size = std::fs::metadata(&data).expect("sled's data file").len();
    assert!(
        size <= MAX_DB_BYTES,
        "{} is {size} bytes after {PHASES} phases (at most {MAX_DB_BYTES} expected): sled's \
         log was not reclaimed during the run",
        data.display()
    );

    // Reclaiming moved pages around: everything is still there.
    let plan = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    assert_eq!(plan["progress"]["completed"], PHASES as u64);
    let history = env
        .medic(&["plan", "history", "-o", "json"])
        .run()
        .code(0)
        .json();
    let starts = history["history"]
        .as_array()
        .expect("history entries")
        .iter()
        .filter(|e| e["event"] == "start")
        .count();
    assert_eq!(starts, PHASES);
}
