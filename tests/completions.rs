//! Shell completions (static and the dynamic `__complete` candidates), man pages, `-o yaml`.

mod common;

use std::process::Command;

use common::Env;

const MEDIC: &str = env!("CARGO_BIN_EXE_medic");

const TINY: &str = "\
name: tiny
description: a tiny one
phases:
  - id: a
    description: 'first \"quoted\": yes'
    run: echo hi
  - id: g
    description: group
    phases:
      - id: b
        description: second
        run: echo x
";

/// Runs a bash script with this environment's state and plans directories; `$MEDIC` is the
/// binary under test. Returns (exit code, stdout, stderr).
fn bash(env: &Env, script: &str) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(env.path())
        .env("MEDIC", MEDIC)
        .env("MEDIC_STATE_DIR", env.state_dir())
        .env("MEDIC_PLANS_DIR", env.path().join("plans"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run bash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What bash's completion offers for `words` (the last one being completed), through the
/// function `medic completions bash` registers: COMP_WORDS/COMP_CWORD set as bash sets them.
fn bash_complete(env: &Env, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source <("$MEDIC" completions bash) || exit 9
COMP_WORDS=("$MEDIC" {words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
f=$(complete -p medic | sed -E 's/.*-F ([^ ]+).*/\1/')
"$f" "${{COMP_WORDS[0]}}" "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" "),
        cword = words.len(),
    );
    let (code, stdout, stderr) = bash(env, &script);
    assert_eq!(code, 0, "completion script failed: {stderr}");
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What fish offers for `line`, with `medic completions fish` loaded and the binary under
/// test first on PATH as `medic`.
fn fish_complete(env: &Env, line: &str) -> Vec<String> {
    let bin = env.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("medic");
    if !link.exists() {
        std::os::unix::fs::symlink(MEDIC, &link).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("fish")
        .arg("-c")
        .arg("medic completions fish | source; and complete -C $argv[1]")
        .arg(line)
        .current_dir(env.path())
        .env("PATH", path)
        .env("MEDIC_STATE_DIR", env.state_dir())
        .env("MEDIC_PLANS_DIR", env.path().join("plans"))
        .output()
        .expect("run fish (install fish to test)");
    assert!(
        out.status.success(),
        "fish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

/// `medic start tiny --manual -o json`'s operation ID.
fn start_manual(env: &Env) -> String {
    let out = env
        .medic(&["start", "tiny", "--manual", "-o", "json"])
        .run()
        .code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("start -o json");
    v["operation"]["id"]
        .as_str()
        .expect("operation id")
        .to_string()
}

fn plan_phase_ids(env: &Env, operation: &str) -> Vec<String> {
    let out = env
        .medic(&["plan", "--operation", operation, "-o", "json"])
        .run()
        .code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan -o json");
    v["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["id"].as_str().expect("phase id").to_string())
        .collect()
}

#[test]
fn bash_script_registers_a_completion_function_for_medic() {
    let env = Env::new();
    let (code, stdout, stderr) = bash(
        &env,
        r#"source <("$MEDIC" completions bash) && complete -p medic && declare -F"#,
    );
    assert_eq!(code, 0, "{stderr}");
    let registered = stdout.lines().next().expect("complete -p output");
    let function = registered
        .split_whitespace()
        .skip_while(|w| *w != "-F")
        .nth(1)
        .unwrap_or_else(|| panic!("no -F function in {registered:?}"));
    assert!(registered.ends_with(" medic"), "{registered}");
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("declare -f {function}")),
        "{function} is registered but not defined:\n{stdout}"
    );
    // The static part still completes subcommands.
    assert_eq!(bash_complete(&env, &["pl"]), ["plan"]);
    assert!(
        !bash_complete(&env, &[""])
            .iter()
            .any(|w| w.starts_with("__")),
        "the hidden __complete is not offered"
    );
}

#[test]
fn zsh_and_fish_scripts_call_medic_for_dynamic_values() {
    let env = Env::new();
    let zsh = env.medic(&["completions", "zsh"]).run().code(0).stdout;
    assert!(zsh.starts_with("#compdef medic"), "{}", &zsh[..100]);
    assert!(
        zsh.contains("__complete $what"),
        "zsh script lacks the dynamic part"
    );
    assert!(zsh.contains("compdef _medic_dynamic medic"));
    assert!(
        !zsh.contains("compdef _medic medic"),
        "the generated registration must be replaced by the dynamic one"
    );
    let fish = env.medic(&["completions", "fish"]).run().code(0).stdout;
    assert!(fish.contains("complete -c medic"), "fish script is empty");
    assert!(fish.contains("-l phase -f -r -a '(__medic_dynamic phases)'"));
    assert!(fish.contains("__complete $argv"));
    // Both parse (.ci/test installs zsh and fish).
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        let path = env.file(&format!("medic.{shell}"));
        std::fs::write(&path, script).unwrap();
        let out = Command::new(shell)
            .arg("-n")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("run {shell} (install zsh and fish to test): {e}"));
        assert!(
            out.status.success(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.medic(&["completions", "powershell"]).run().code(2);
}

#[test]
fn phase_completion_lists_exactly_the_active_plans_phase_ids() {
    let env = Env::new();
    env.procedure("tiny", TINY);
    // No state directory yet: no candidates, and nothing is created.
    for what in ["operations", "phases"] {
        let out = env.medic(&["__complete", what]).run().code(0);
        assert_eq!(out.stdout, "", "{what}");
    }
    assert!(!env.state_dir().exists(), "completion created the state");

    let first = start_manual(&env);
    let ids = plan_phase_ids(&env, &first);
    assert_eq!(ids, ["/a", "/g", "/g/b"]);
    let out = env.medic(&["__complete", "phases"]).run().code(0);
    assert_eq!(lines(&out.stdout), ids);
    let out = env.medic(&["__complete", "operations"]).run().code(0);
    assert_eq!(lines(&out.stdout), [first.as_str()]);

    // Through the bash script: `--phase ` and `--phase=/g` (bash splits at '=').
    assert_eq!(
        bash_complete(&env, &["plan", "execute", "--phase", ""]),
        ids
    );
    assert_eq!(
        bash_complete(&env, &["plan", "execute", "--phase", "=", "/g"]),
        ["/g", "/g/b"]
    );
    assert_eq!(
        bash_complete(&env, &["plan", "--operation", ""]),
        [first.as_str()]
    );
    assert!(bash_complete(&env, &["start", ""]).contains(&"tiny".to_string()));
    assert_eq!(bash_complete(&env, &["procedures", "show", "ti"]), ["tiny"]);
    // fish, asked what it would offer (`complete -C`).
    assert_eq!(fish_complete(&env, "medic plan execute --phase "), ids);
    assert_eq!(
        fish_complete(&env, "medic plan execute --phase=/g"),
        ["--phase=/g", "--phase=/g/b"]
    );
    assert_eq!(
        fish_complete(&env, "medic plan --operation "),
        [first.as_str()]
    );
    assert!(fish_complete(&env, "medic start ").contains(&"tiny".to_string()));

    // Two active operations: the phases of the one named with --operation.
    env.procedure(
        "other",
        "name: other\ndescription: o\nphases:\n  - id: only\n    description: o\n    run: 'true'\n",
    );
    let out = env
        .medic(&["start", "other", "--manual", "-o", "json"])
        .run()
        .code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let second = v["operation"]["id"].as_str().unwrap().to_string();
    let out = env.medic(&["__complete", "operations"]).run().code(0);
    assert_eq!(lines(&out.stdout), [first.clone(), second.clone()]);
    let out = env
        .medic(&["__complete", "phases", "--operation", &second])
        .run()
        .code(0);
    assert_eq!(lines(&out.stdout), ["/only"]);
    assert_eq!(
        bash_complete(
            &env,
            &["plan", "--operation", &second, "execute", "--phase", ""]
        ),
        ["/only"]
    );
}

#[test]
fn a_candidate_is_offered_as_it_is_never_expanded_by_the_shell() {
    let env = Env::new();
    // A procedure file's name is whatever the plans directory holds: bash must offer it as
    // text, never run or glob it.
    let hostile = "x$(touch pwned)*";
    env.procedure(hostile, TINY);
    assert!(bash_complete(&env, &["start", ""]).contains(&hostile.to_string()));
    assert_eq!(bash_complete(&env, &["start", "x$"]), [hostile]);
    assert!(!env.path().join("pwned").exists(), "bash ran a candidate");
}

#[test]
fn man_writes_a_page_per_subcommand_and_refuses_a_file() {
    let env = Env::new();
    let dir = env.file("man");
    std::fs::create_dir(&dir).unwrap();
    env.medic(&["man", dir.to_str().unwrap()]).run().code(0);
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    for page in [
        "medic.1",
        "medic-start.1",
        "medic-plan.1",
        "medic-plan-execute.1",
        "medic-procedures-show.1",
        "medic-completions.1",
    ] {
        assert!(
            written.iter().any(|w| w == page),
            "no {page} in {written:?}"
        );
    }
    assert!(
        written.iter().all(|w| w.ends_with(".1")),
        "only man pages: {written:?}"
    );
    assert!(
        !written
            .iter()
            .any(|w| w == "medic-__complete.1" || w == "medic-drill-node.1"),
        "hidden commands get no page: {written:?}"
    );
    let execute = std::fs::read_to_string(dir.join("medic-plan-execute.1")).unwrap();
    assert!(execute.contains(".TH medic-plan-execute 1"), "{execute}");
    for option in ["phase", "force", "dry\\-run", "operation"] {
        assert!(
            execute.contains(&format!("\\-\\-{option}")),
            "no --{option}"
        );
    }
    assert!(
        execute.contains("MEDIC_STATE_DIR"),
        "env vars are documented"
    );

    // The default is the current directory.
    let cwd = env.file("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut run = env.medic(&["man"]);
    run.command.current_dir(&cwd);
    run.run().code(0);
    assert!(cwd.join("medic.1").exists());

    let file = env.file("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    env.medic(&["man", file.to_str().unwrap()])
        .run()
        .code(2)
        .stderr_contains("is not a directory");
    env.medic(&["man", env.file("missing").to_str().unwrap()])
        .run()
        .code(2);
    assert!(!env.file("missing").exists());
}

fn yaml_equals_json(env: &Env, args: &[&str]) {
    let json = env
        .medic(&[args, &["-o", "json"]].concat())
        .run()
        .code(0)
        .stdout;
    let yaml = env
        .medic(&[args, &["-o", "yaml"]].concat())
        .run()
        .code(0)
        .stdout;
    let from_json: serde_json::Value = serde_json::from_str(&json).expect("JSON parses");
    let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| {
        panic!(
            "`medic {}` -o yaml does not parse: {e}\n{yaml}",
            args.join(" ")
        )
    });
    assert_eq!(from_yaml, from_json, "{yaml}");
    assert!(
        !yaml.trim_start().starts_with('{'),
        "YAML, not JSON: {yaml}"
    );
}

#[test]
fn yaml_output_is_the_json_output_as_yaml() {
    let env = Env::new();
    env.procedure("tiny", TINY);
    start_manual(&env);
    yaml_equals_json(&env, &["operations"]);
    yaml_equals_json(&env, &["plan"]);
    yaml_equals_json(&env, &["procedures"]);
    env.medic(&["plan", "resume"]).run().code(0);
    yaml_equals_json(&env, &["plan"]);
    yaml_equals_json(&env, &["plan", "logs"]);
    yaml_equals_json(&env, &["plan", "history"]);
    yaml_equals_json(&env, &["plan", "export"]);
    // Errors too: the same message, as YAML.
    let out = env
        .medic(&["plan", "--operation", "nope", "-o", "yaml"])
        .run()
        .code(2);
    let v: serde_json::Value = serde_saphyr::from_str(&out.stdout).expect("error as YAML");
    assert_eq!(v["exit_code"], 2);
    assert!(v["error"].as_str().unwrap().contains("no operation `nope`"));
}
