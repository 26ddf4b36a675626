//! Approvals: a policy from the procedure (`approval:`) or the inventory (`policy:`) makes
//! execute/resume/rollback refuse (exit 3) until enough people approved the plan's
//! fingerprint; the creator's own approval does not count when distinct; `--force` runs
//! unapproved and history says so; approvals are in `plan approvals`, history and exports.
//! Two people are two `USER` values (medic's user is `$USER`).

mod common;

use common::{history, state_of, Env};

const REVIEWED: &str = r#"
name: reviewed
approval: {required: true, count: 1, distinct_from_creator: true}
phases:
  - id: change
    run: echo changed >> "$WORK/ran"
"#;

const PLAIN: &str = r#"
name: plain
phases:
  - id: change
    run: echo changed >> "$WORK/ran"
"#;

fn host() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_procedure_policy_needs_someone_else_s_approval_before_it_runs() {
    let env = Env::new();
    env.procedure("reviewed", REVIEWED);
    let alice = |args: &[&str]| env.medic(args).env("USER", "alice");
    let bob = |args: &[&str]| env.medic(args).env("USER", "bob");

    // Created, but the run is refused: who must approve, and how.
    let out = alice(&["start", "reviewed"]).run().code(3);
    assert!(
        out.stderr
            .contains("needs 1 approval (procedure reviewed) and has 0")
            && out.stderr.contains(&format!(
                "someone other than alice@{} (who created it)",
                host()
            ))
            && out.stderr.contains("medic plan approve --operation"),
        "{}",
        out.stderr
    );
    assert_eq!(env.read("ran"), "");
    assert_eq!(state_of(&env, "/change"), "unstarted");

    // The creator's own approval is refused; an approval needs a reason.
    alice(&["plan", "approve", "--reason", "looks fine to me"])
        .run()
        .code(3)
        .stderr_contains("must come from someone else (`distinct_from_creator`)");
    bob(&["plan", "approve"])
        .run()
        .code(2)
        .stderr_contains("plan approve needs --reason");
    alice(&["plan", "resume"]).run().code(3);

    bob(&["plan", "approve", "--reason", "CHG-42 reviewed"])
        .run()
        .code(0)
        .stdout_contains(&format!("as bob@{}", host()));
    let list = bob(&["-o", "json", "plan", "approvals"])
        .run()
        .code(0)
        .json();
    assert_eq!(list["approved"], true, "{list}");
    assert_eq!(list["approvals"][0]["who"], format!("bob@{}", host()));
    assert_eq!(list["approvals"][0]["counts"], true);
    assert_eq!(list["approvals"][0]["reason"], "CHG-42 reviewed");
    assert_eq!(list["approvals"][0]["fingerprint"], list["fingerprint"]);

    alice(&["plan", "resume"]).run().code(0);
    assert_eq!(env.read("ran"), "changed\n");

    // In history and in both exports.
    let approved = history(&env)
        .into_iter()
        .find(|e| e["event"] == "approved")
        .expect("approved in history");
    assert_eq!(approved["user"], "bob");
    assert_eq!(approved["reason"], "CHG-42 reviewed");
    let json = bob(&["plan", "export", "--format", "json"])
        .run()
        .code(0)
        .json();
    assert_eq!(
        json["review"]["approvals"][0]["who"],
        format!("bob@{}", host())
    );
    assert_eq!(json["review"]["policy"]["distinct_from_creator"], true);
    bob(&["plan", "export"])
        .run()
        .code(0)
        .stdout_contains("## Approvals")
        .stdout_contains(&format!("| bob@{} |", host()))
        .stdout_contains("CHG-42 reviewed");
}

#[test]
fn an_inventory_policy_applies_to_every_procedure_and_force_runs_unapproved() {
    let env = Env::new();
    env.procedure("plain", PLAIN);
    std::fs::write(
        env.file("cluster.yaml"),
        "nodes:\n  - name: n1\npolicy: {require_approval: true}\n",
    )
    .unwrap();
    env.medic(&["start", "plain"])
        .run()
        .code(3)
        .stderr_contains("needs 1 approval (inventory policy) and has 0; anyone must review it");
    env.medic(&["plan", "resume", "--force", "--reason", "outage, no time"])
        .run()
        .code(0)
        .stderr_contains("unapproved (--force, recorded in history)");
    assert_eq!(env.read("ran"), "changed\n");
    let forced = history(&env)
        .into_iter()
        .find(|e| e["event"] == "unapproved")
        .expect("unapproved in history");
    assert_eq!(forced["forced"], true);
    assert!(forced["detail"]
        .as_str()
        .unwrap()
        .contains("ran unapproved"));
    let list = env
        .medic(&["-o", "json", "plan", "approvals"])
        .run()
        .code(0)
        .json();
    assert_eq!(list["approved"], false);
    assert_eq!(list["policy"]["from"][0], "inventory policy");
}

#[test]
fn a_bad_approval_block_is_refused_at_load() {
    let env = Env::new();
    env.procedure(
        "bad",
        "name: bad\napproval: {count: 0, by: x}\nphases:\n  - id: a\n    run: 'true'\n",
    );
    env.medic(&["start", "bad", "--dry-run"])
        .run()
        .code(2)
        .stderr_contains("unknown key `by` in approval")
        .stderr_contains("approval.count must be between 1 and 10, not 0");
}

/// An included procedure's `approval:` joins the includer's policy, the strictest winning:
/// the includer asks for one approval by anyone, the included one for two, not by the
/// creator; the operation needs two, not by the creator, and says where that came from.
#[test]
fn an_included_procedure_s_approval_joins_the_policy_strictest_wins() {
    let env = Env::new();
    env.procedure(
        "inner",
        "name: inner\napproval: {required: true, count: 2, distinct_from_creator: true}\nphases:\n  - id: change\n    run: echo changed >> \"$WORK/ran\"\n",
    );
    env.procedure(
        "outer",
        "name: outer\napproval: {required: true, count: 1}\nphases:\n  - id: sub\n    include: {procedure: inner}\n",
    );
    let alice = |args: &[&str]| env.medic(args).env("USER", "alice");
    alice(&["start", "outer"])
        .run()
        .code(3)
        .stderr_contains(
            "needs 2 approvals (procedure outer, included procedure inner) and has 0; someone other than alice@",
        );
    alice(&["plan", "approve", "--reason", "mine"])
        .run()
        .code(3)
        .stderr_contains("must come from someone else");
    env.medic(&["plan", "approve", "--reason", "ok"])
        .env("USER", "bob")
        .run()
        .code(0);
    alice(&["plan", "resume"])
        .run()
        .code(3)
        .stderr_contains("needs 2 approvals")
        .stderr_contains("and has 1");
    env.medic(&["plan", "approve", "--reason", "ok too"])
        .env("USER", "carol")
        .run()
        .code(0);
    alice(&["plan", "approvals"])
        .run()
        .code(0)
        .stdout_contains(
            "policy: 2 approval(s), not by the operation's creator (procedure outer, included procedure inner)",
        );
    alice(&["plan", "resume"]).run().code(0);
    assert_eq!(env.read("ran"), "changed\n");
}
