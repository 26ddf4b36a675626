//! Who answers `confirm: true` phases for a command: `--yes`, the operator on a terminal
//! (shown the rendered action on stderr, asked to type `yes`), or nobody (no terminal: the
//! engine refuses the phase, exit 3).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;

use crate::engine::{Answer, ConfirmRequest, Confirmer};

/// The confirmer for a run: `--yes` answers; else a terminal asks; else nobody.
pub(super) fn confirmer(yes: bool) -> Arc<dyn Confirmer> {
    if yes {
        Arc::new(AssumeYes)
    } else if std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
        && !super::detach::is_detached()
    {
        Arc::new(Prompt)
    } else {
        Arc::new(Nobody)
    }
}

struct AssumeYes;

impl Confirmer for AssumeYes {
    fn confirm(&self, _: &ConfirmRequest) -> Answer {
        Answer::Yes("--yes")
    }
}

struct Nobody;

impl Confirmer for Nobody {
    fn confirm(&self, _: &ConfirmRequest) -> Answer {
        Answer::NoTerminal
    }
}

/// Asks on the terminal: the phase, its description and its rendered action, then a line
/// that must be exactly `yes`.
struct Prompt;

/// The longest answer read: a confirmation is one short word.
const MAX_ANSWER: u64 = 64;

impl Confirmer for Prompt {
    fn confirm(&self, request: &ConfirmRequest) -> Answer {
        let mut err = std::io::stderr().lock();
        let what = if request.rollback { "roll back" } else { "run" };
        let _ = writeln!(
            err,
            "\n{} phase {} ({})",
            console::style("confirm:").yellow().bold(),
            console::style(&request.phase).bold(),
            request.description
        );
        for line in &request.action {
            let _ = writeln!(err, "    {line}");
        }
        let _ = write!(err, "type `yes` to {what} it, anything else stops here: ");
        let _ = err.flush();
        let mut answer = String::new();
        let stdin = std::io::stdin();
        let read = stdin.lock().take(MAX_ANSWER).read_line(&mut answer);
        match read {
            Ok(_) if answer.trim() == "yes" => Answer::Yes("typed yes on a terminal"),
            _ => Answer::No,
        }
    }
}
