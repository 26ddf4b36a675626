//! `medic completions SHELL`, `medic man [DIR]`, and the hidden `medic __complete` the
//! completion scripts call for values only the state and the catalog know.
//!
//! 1. clap_complete's static generator writes the script for every subcommand and option.
//! 2. A small hand-written addition per shell wraps it: for `--phase`, `--operation`,
//!    `medic start NAME` and `medic procedures show NAME` it runs `medic __complete WHAT`
//!    (passing on `--state-dir`, `--plans-dir` and `--operation` from the command line) and
//!    offers what that prints; everything else goes to the generated function.
//! 3. `__complete` reads the catalog or the store read-only (as `medic plan` does: nothing
//!    is created, the database is released at once) and prints one candidate per line.
//!
//! clap_complete's own dynamic engine (`unstable-dynamic`) would do step 2 for us, but it
//! needs `clap/unstable-ext` and is exempt from semver; the wrapper is a few lines per shell.

use std::path::Path;

use clap::CommandFactory;

use super::args::{Candidates, Cli, Shell};
use super::{CliError, Ctx};
use crate::store::{Access, Store};

/// `medic completions SHELL`: the generated script plus the dynamic part.
pub(super) fn completions(shell: Shell) -> Result<i32, CliError> {
    let (generator, extra) = match shell {
        Shell::Bash => (clap_complete::Shell::Bash, BASH),
        Shell::Zsh => (clap_complete::Shell::Zsh, ZSH),
        Shell::Fish => (clap_complete::Shell::Fish, FISH),
    };
    let mut script = Vec::new();
    let mut cmd = without_hidden(&Cli::command());
    clap_complete::generate(generator, &mut cmd, "medic", &mut script);
    let mut script = String::from_utf8(script).expect("clap_complete writes UTF-8");
    if shell == Shell::Zsh {
        // The generated tail registers `_medic` (or runs it when autoloaded from fpath);
        // ours does the same with `_medic_dynamic`, which falls back to `_medic`.
        if let Some(at) = script.rfind(ZSH_GENERATED_TAIL) {
            script.truncate(at);
        }
    }
    script.push_str(extra);
    print!("{script}");
    Ok(0)
}

/// `cmd` without its hidden subcommands (`__complete`, `drill node`), at every level: the
/// generators would offer them too.
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_string())
        .about(cmd.get_about().cloned().unwrap_or_default())
        .args(cmd.get_arguments().cloned());
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(without_hidden(sub));
    }
    out
}

/// `medic man DIR`: medic.1 and one page per visible subcommand (medic-plan-execute.1, ...).
pub(super) fn man_pages(dir: &Path) -> Result<i32, CliError> {
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory; pass an existing directory for the man pages (medic man DIR)",
            dir.display()
        )));
    }
    clap_mangen::generate_to(Cli::command(), dir).map_err(|e| CliError {
        code: 1,
        message: format!("write man pages into {}: {e}", dir.display()),
    })?;
    Ok(0)
}

/// `medic __complete WHAT`: one candidate per line. No state directory yet means no
/// operations, not an error.
pub(super) fn candidates(
    ctx: &Ctx,
    what: Candidates,
    operation: Option<&str>,
) -> Result<i32, CliError> {
    let lines: Vec<String> = match what {
        Candidates::Procedures => ctx.catalog()?.names().map(str::to_string).collect(),
        Candidates::Operations | Candidates::Phases => {
            let mut store = match Store::open_with(&ctx.cli.state_dir, Access::Read) {
                Ok(store) => store,
                Err(e) if e.is_missing() => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            let lines = if what == Candidates::Operations {
                store.operations()?.into_iter().map(|op| op.id).collect()
            } else {
                let op = crate::operation::select(&mut store, operation, true)?;
                let plan = store.plan(&op.id)?;
                plan.nodes()
                    .iter()
                    .filter(|n| !n.id.is_root())
                    .map(|n| n.id.to_string())
                    .collect()
            };
            store.release();
            lines
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(0)
}

const ZSH_GENERATED_TAIL: &str = "if [ \"$funcstack[1]\" = \"_medic\" ]; then";

const BASH: &str = r#"
# Values only medic knows: phase IDs, operation IDs, procedure names (medic __complete).
_medic_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" what=""
    # bash splits `--phase=/x` at '=': the option is then two words back.
    if [[ "$prev" == "=" && $COMP_CWORD -ge 2 ]]; then
        prev="${COMP_WORDS[COMP_CWORD-2]}"
    fi
    case "$prev" in
        --phase) what=phases ;;
        --operation) what=operations ;;
        start) [[ "$cur" != -* ]] && what=procedures ;;
        show) [[ "$cur" != -* && "${COMP_WORDS[COMP_CWORD-2]}" == procedures ]] && what=procedures ;;
    esac
    if [[ -z "$what" ]]; then
        _medic "$@"
        return
    fi
    local args=() i word value
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            --state-dir|--plans-dir|--operation)
                [[ "${COMP_WORDS[i+1]}" == "=" ]] && ((i++))
                if ((i + 1 < COMP_CWORD)); then
                    value="${COMP_WORDS[i+1]}"
                    args+=("$word" "${value/#\~/$HOME}")
                fi
                ((i++)) ;;
        esac
    done
    # Each candidate is taken as text and matched as a literal prefix: `compgen -W` would expand
    # (run, glob) what a candidate holds, and a procedure's name is a file name.
    local line
    COMPREPLY=()
    while IFS= read -r line; do
        [[ -n "$line" && "$line" == "$cur"* ]] && COMPREPLY+=("$line")
    done < <("${COMP_WORDS[0]}" __complete "$what" "${args[@]}" 2>/dev/null)
}
complete -F _medic_dynamic -o bashdefault -o default medic
"#;

const ZSH: &str = r#"
# Values only medic knows: phase IDs, operation IDs, procedure names (medic __complete).
_medic_dynamic() {
    local what="" cur="${words[CURRENT]}" prev="${words[CURRENT-1]}"
    case "$cur" in
        --phase=*) what=phases; compset -P '*=' ;;
        --operation=*) what=operations; compset -P '*=' ;;
        -*) ;;
        *) case "$prev" in
               --phase) what=phases ;;
               --operation) what=operations ;;
               start) what=procedures ;;
               show) [[ "${words[CURRENT-2]}" == procedures ]] && what=procedures ;;
           esac ;;
    esac
    if [[ -z "$what" ]]; then
        _medic "$@"
        return
    fi
    local -a args candidates
    local i
    for ((i = 2; i < CURRENT; i++)); do
        case "${words[i]}" in
            --state-dir|--plans-dir|--operation)
                (( i + 1 < CURRENT )) && args+=("${words[i]}" "${words[i+1]/#\~/$HOME}")
                (( i++ )) ;;
            --state-dir=*|--plans-dir=*|--operation=*) args+=("${words[i]}") ;;
        esac
    done
    candidates=(${(f)"$(${words[1]} __complete $what "${args[@]}" 2>/dev/null)"})
    compadd -a candidates
}

if [ "$funcstack[1]" = "_medic" ]; then
    _medic_dynamic "$@"
else
    compdef _medic_dynamic medic
fi
"#;

const FISH: &str = r#"
# Values only medic knows: phase IDs, operation IDs, procedure names (medic __complete).
function __medic_dynamic
    set -l tokens (commandline -opc)
    set -l n (count $tokens)
    set -l args
    for i in (seq 2 $n)
        switch $tokens[$i]
            case --state-dir --plans-dir --operation
                if test $i -lt $n
                    set -a args $tokens[$i] $tokens[(math $i + 1)]
                end
            case '--state-dir=*' '--plans-dir=*' '--operation=*'
                set -a args $tokens[$i]
        end
    end
    $tokens[1] __complete $argv $args 2>/dev/null
end
complete -c medic -n '__fish_seen_subcommand_from plan' -l operation -f -r -a '(__medic_dynamic operations)'
complete -c medic -n '__fish_seen_subcommand_from execute rollback logs' -l phase -f -r -a '(__medic_dynamic phases)'
complete -c medic -n '__fish_medic_using_subcommand start' -f -a '(__medic_dynamic procedures)'
complete -c medic -n '__fish_medic_using_subcommand procedures; and __fish_seen_subcommand_from show' -f -a '(__medic_dynamic procedures)'
"#;
