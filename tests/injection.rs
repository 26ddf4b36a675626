//! A value interpolated into a command can never become shell syntax, in any placement: a table
//! of placements × hostile values, run for real (local `run`, `wait`, and `ssh` with `env:` on a
//! real sshd), and a table of placements that are refused when the procedure loads.

mod common;

use common::sshd::Sshd;
use common::Env;

/// Values that would run `touch MARKER` (or otherwise change the command) if they escaped their
/// quoting. `MARKER` is replaced by a path unique to the test run.
const HOSTILE: &[&str] = &[
    "$(touch MARKER)",
    "`touch MARKER`",
    "'; touch MARKER; '",
    "\"; touch MARKER; \"",
    "x; touch MARKER",
    "a\nb; touch MARKER",
    "|| touch MARKER",
    "' \"$(touch MARKER)\" '",
    "\\'; touch MARKER #",
    "$'\\x27'; touch MARKER",
    "EOF\ntouch MARKER\nEOF",
    "${IFS}touch${IFS}MARKER",
    "*",
    "~root",
    "a  b\tc",
    "-rf --no-preserve-root",
    "x\\",
    "ünïcødé ✓",
    "__medic_eof__",
    "}}{{ v }}",
];

/// Accepted placements: (phase id, phase body writing the value to `{out}/ID`). Each must write
/// exactly the value.
fn placements(out: &str) -> Vec<(&'static str, String)> {
    vec![
        ("bare", format!("run: printf %s {{{{ v }}}} > {out}/bare")),
        (
            "adjacent",
            format!("run: printf %s S:{{{{ v }}}} > {out}/adjacent"),
        ),
        (
            "assignment",
            format!("run: X={{{{ v }}}}; printf %s \"$X\" > {out}/assignment"),
        ),
        (
            "substitution",
            format!("run: printf %s \"$(printf %s {{{{ v }}}})\" > {out}/substitution"),
        ),
        (
            "parameter-default",
            format!("run: printf %s ${{UNSET_X:-{{{{ v }}}}}} > {out}/parameter-default"),
        ),
        (
            "positional",
            format!("run: sh -c 'printf %s \"$1\"' _ {{{{ v }}}} > {out}/positional"),
        ),
        (
            "list-item",
            format!("run: printf %s {{{{ [v] }}}} > {out}/list-item"),
        ),
        (
            "wait",
            format!("wait: {{run: \"printf %s {{{{ v }}}} > {out}/wait\", timeout: 5s}}"),
        ),
        (
            "ssh",
            format!("ssh: {{on: n1, run: \"printf %s {{{{ v }}}} > {out}/ssh\"}}"),
        ),
        (
            "ssh-env",
            format!(
                "ssh: {{on: n1, run: \"printf %s \\\"$V\\\" > {out}/ssh-env\", env: {{V: \"{{{{ v }}}}\"}}}}"
            ),
        ),
        (
            "ssh-sudo-env",
            format!(
                "ssh: {{on: n1, sudo: true, run: \"printf %s \\\"$V\\\" > {out}/ssh-sudo-env\", env: {{V: \"{{{{ v }}}}\"}}}}"
            ),
        ),
    ]
}

fn expected(placement: &str, value: &str) -> String {
    match placement {
        "adjacent" => format!("S:{value}"),
        // `$( )` drops trailing newlines, as the shell does.
        "substitution" => value.trim_end_matches('\n').to_string(),
        _ => value.to_string(),
    }
}

#[test]
fn hostile_values_stay_one_word_in_every_accepted_placement() {
    let sshd = Sshd::start(1);
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let marker_text = marker.display().to_string();
    let sudo_works = std::process::Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mut runs = 0;
    for value in HOSTILE {
        let value = value.replace("MARKER", &marker_text);
        let env = Env::new();
        sshd.write_worker_inventory(env.path());
        let out = env.file("out");
        std::fs::create_dir_all(&out).unwrap();
        let out = out.display().to_string();
        let mut yaml = String::from("name: p\nparams:\n  v: {required: true}\nphases:\n");
        let cases: Vec<_> = placements(&out)
            .into_iter()
            .filter(|(id, _)| sudo_works || *id != "ssh-sudo-env")
            .collect();
        for (id, body) in &cases {
            yaml.push_str(&format!("  - id: {id}\n    {body}\n"));
        }
        env.procedure("p", &yaml);
        env.medic(&["start", "p", "--set", &format!("v={value}")])
            .run()
            .code(0);
        runs += 1;
        for (id, _) in &cases {
            let got = std::fs::read_to_string(format!("{out}/{id}")).unwrap_or_default();
            assert_eq!(
                got,
                expected(id, &value),
                "placement `{id}` changed the value {value:?}"
            );
        }
        assert!(
            !marker.exists(),
            "the value {value:?} ran as a command in one of the placements"
        );
    }
    assert_eq!(runs, HOSTILE.len());
}

/// Placements where a quoted value could break out: refused at load, naming the line and the fix.
const REFUSED: &[(&str, usize, &str)] = &[
    (
        "run: \"echo 'S:{{ v }}'\"",
        6,
        "remove the quotes around {{ v }}",
    ),
    ("run: \"echo \\\"S:{{ v }}\\\"\"", 6, "inside double quotes"),
    ("run: \"echo \\\"$(echo {{ v }})\\\"\"", 6, "__accepted__"),
    (
        "run: \"echo `echo {{ v }}`\"",
        6,
        "write $( ... ) instead of backticks",
    ),
    (
        "run: \"echo $(( {{ v }} + 1 ))\"",
        6,
        "arithmetic expansion",
    ),
    ("run: |-\n      echo hi # note {{ v }}", 7, "shell comment"),
    (
        "run: |-\n      cat <<EOF\n      {{ v }}\n      EOF",
        8,
        "here-document",
    ),
    ("run: \"echo \\\\{{ v }}\"", 6, "follows a backslash"),
    ("run: \"echo ${{ v }}\"", 6, "a `$` right before a value"),
    ("run: \"eval {{ v }}\"", 6, "argument of `eval`"),
    (
        "run: \"bash -c {{ v }}\"",
        6,
        "-c`, so the shell would run the value as code",
    ),
    (
        "run: \"sudo -n sh -ec {{ v }}\"",
        6,
        "sh -ec`, so the shell",
    ),
    ("run: \"ssh host {{ v }}\"", 6, "argument of `ssh`"),
    (
        "wait: {run: \"test '{{ v }}' = x\"}",
        6,
        "inside single quotes",
    ),
    (
        "ssh: {on: n1, run: \"echo '{{ v }}'\"}",
        6,
        "inside single quotes",
    ),
    (
        "run: \"echo '{% if v %}'{{ v }}'{% endif %}'\"",
        6,
        "a `{% %}` tag inside quotes",
    ),
    (
        "run: \"echo \\\"${X:-{{ v }}}\\\"\"",
        6,
        "inside double quotes",
    ),
    ("run: \"echo $'{{ v }}'\"", 6, "inside single quotes"),
    (
        "run: \"su root -c {{ v }}\"",
        6,
        "-c`, so the shell would run the value as code",
    ),
    ("run: \"watch {{ v }}\"", 6, "argument of `watch`"),
    (
        "run: \"cat <<< x; timeout 5 eval {{ v }}\"",
        6,
        "argument of `eval`",
    ),
    (
        "rollback: {run: \"echo '{{ v }}'\"}\n    run: \"true\"",
        6,
        "inside single quotes",
    ),
    // Review findings: a Jinja comment with an apostrophe or a raw block holding `{%` used to
    // switch the whole check off; a reserved word used to hide the command after it.
    (
        "run: |-\n      {# don't quote it #}\n      echo 'S:{{ v }}'",
        8,
        "inside single quotes",
    ),
    (
        "run: \"{% raw %}printf '{%%s}' x{% endraw %}; echo 'S:{{ v }}'\"",
        6,
        "inside single quotes",
    ),
    (
        "run: \"if eval {{ v }}; then :; fi\"",
        6,
        "argument of `eval`",
    ),
    (
        "run: \"for n in a; do ssh $n {{ v }}; done\"",
        6,
        "argument of `ssh`",
    ),
];

#[test]
fn placements_that_let_a_value_out_are_refused_at_load_with_the_fix() {
    let sshd = Sshd::start(1);
    let mut checked = 0;
    for (body, line, says) in REFUSED {
        let env = Env::new();
        sshd.write_worker_inventory(env.path());
        env.procedure(
            "p",
            &format!("name: p\nparams:\n  v: {{default: x}}\nphases:\n  - id: a\n    {body}\n"),
        );
        let run = env.medic(&["start", "p", "--dry-run"]).run();
        if *says == "__accepted__" {
            run.code(0);
            continue;
        }
        // The line of the value itself, also inside a block scalar.
        let run = run.code(2).stderr_contains(says);
        assert!(
            run.stderr.contains(&format!("plans/p.yaml:{line}:")),
            "not at line {line}: `{body}`:\n{}",
            run.stderr
        );
        checked += 1;
    }
    assert_eq!(checked, REFUSED.len() - 1);
}

#[test]
fn a_hostile_node_address_never_reaches_ssh_as_an_option() {
    let env = Env::new();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    env.procedure(
        "p",
        "name: p\nphases:\n  - id: a\n    ssh: {on: n1, run: \"true\"}\n",
    );
    for (field, value, says) in [
        (
            "address",
            format!("'-oProxyCommand=touch {}'", marker.display()),
            "is not a host name",
        ),
        ("address", "'a b'".to_string(), "is not a host name"),
        ("address", "'x;touch y'".to_string(), "is not a host name"),
        ("address", "'$(id)'".to_string(), "is not a host name"),
        (
            "name",
            "'-n1'".to_string(),
            "must start with a letter or digit",
        ),
    ] {
        let node = if field == "name" {
            format!("{{name: {value}, address: 127.0.0.1}}")
        } else {
            format!("{{name: n1, address: {value}}}")
        };
        std::fs::write(
            env.file("cluster.yaml"),
            format!(
                "name: c\nssh: {{user: root, host_key_checking: accept-new}}\nnodes:\n  - {node}\n"
            ),
        )
        .unwrap();
        env.medic(&["start", "p"])
            .run()
            .code(2)
            .stderr_contains("cluster.yaml:4:")
            .stderr_contains(says);
        assert!(!marker.exists(), "ssh ran the ProxyCommand of {value}");
    }
    for (field, value) in [
        ("user", "-oProxyCommand=x"),
        ("jump_host", "-oProxyCommand=x"),
    ] {
        std::fs::write(
            env.file("cluster.yaml"),
            format!("name: c\nssh: {{{field}: '{value}'}}\nnodes:\n  - {{name: n1, address: 127.0.0.1}}\n"),
        )
        .unwrap();
        env.medic(&["start", "p"])
            .run()
            .code(2)
            .stderr_contains("cluster.yaml:2:")
            .stderr_contains(&format!("ssh.{field}"));
    }
    // IPv6 and host names are fine.
    for address in ["'::1'", "node-1.example.com", "10.0.0.1"] {
        std::fs::write(
            env.file("cluster.yaml"),
            format!("name: c\nssh: {{user: root}}\nnodes:\n  - {{name: n1, address: {address}}}\n"),
        )
        .unwrap();
        env.medic(&["start", "p", "--dry-run"]).run().code(0);
    }
}
