//! Where a `{{ value }}` sits in a shell command template, checked when a procedure loads.
//!
//! medic quotes every interpolated value as one shell word (see [`crate::template`]). That is
//! only safe where the shell reads a plain word: a quoted value inside the author's own quotes,
//! backticks, a comment, a here-document or an arithmetic expansion would break out of them, and
//! a value handed to `eval`, `sh -c`, `ssh` or `su -c` is parsed as shell code a second time. So
//! every such placement is refused at load, with what to write instead.
//!
//! 1. The template is split into static text, `{{ }}` expressions and `{% %}` tags (whitespace
//!    control and `{% raw %}` honoured); each expression becomes one placeholder character.
//! 2. A small POSIX shell lexer walks the text (quotes, `$( )`, `${ }`, `$(( ))`, backticks,
//!    comments, here-documents) and judges each placeholder by the context it is in and by the
//!    command it is an argument of.
//! 3. A `{% %}` tag is only allowed where nothing is open, so that no branch or loop can change
//!    the quoting around a value. `{{ x | safe }}` is the author's explicit opt-out.

/// A placement that lets a value become shell syntax, found at `offset` (bytes into the source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub offset: usize,
    pub message: String,
}

/// Stands for one `{{ expression }}` in the character stream.
const VALUE: char = '\u{E000}';
/// Stands for one `{% tag %}`.
const TAG: char = '\u{E001}';

enum Piece<'a> {
    Text(&'a str),
    Value { offset: usize, expr: &'a str },
    Tag { offset: usize },
}

/// Splits a template into text, values and tags; `None` when a block is not closed (the
/// template compiler reports that).
fn pieces(source: &str) -> Option<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = 0;
    let mut strip_next = false;
    while rest < source.len() {
        let tail = &source[rest..];
        let Some(open) = tail.find('{') else {
            push_text(&mut out, tail, &mut strip_next);
            break;
        };
        let after = &tail[open..];
        let kind = if after.starts_with("{{") {
            '{'
        } else if after.starts_with("{%") {
            '%'
        } else if after.starts_with("{#") {
            '#'
        } else {
            push_text(&mut out, &tail[..open + 1], &mut strip_next);
            rest += open + 1;
            continue;
        };
        let mut text = &tail[..open];
        if after[2..].starts_with('-') {
            text = text.trim_end();
        }
        push_text(&mut out, text, &mut strip_next);
        let start = rest + open;
        let close = match kind {
            '{' => "}}",
            '%' => "%}",
            _ => "#}",
        };
        let inner_start = start + 2;
        // A comment holds no string literals: `{# don't #}` ends at its `#}`.
        let end = if kind == '#' {
            source[inner_start..].find(close)?
        } else {
            find_close(&source[inner_start..], close)?
        } + inner_start;
        let inner = &source[inner_start..end];
        strip_next = inner.ends_with('-');
        let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
        rest = end + 2;
        match kind {
            '{' => out.push(Piece::Value {
                offset: start,
                expr: inner,
            }),
            '%' if inner == "raw" => {
                // Everything up to `{% endraw %}` is literal text, other `{%` included.
                let mut search = rest;
                let body_end = loop {
                    let from = search + source[search..].find("{%")?;
                    let tag_end = source[from + 2..].find("%}")? + from + 2;
                    let tag = source[from + 2..tag_end].trim_matches('-').trim();
                    if tag == "endraw" {
                        break (from, tag_end + 2);
                    }
                    search = from + 2;
                };
                push_text(&mut out, &source[rest..body_end.0], &mut strip_next);
                rest = body_end.1;
            }
            '%' => out.push(Piece::Tag { offset: start }),
            _ => {}
        }
    }
    Some(out)
}

fn push_text<'a>(out: &mut Vec<Piece<'a>>, text: &'a str, strip: &mut bool) {
    let text = if std::mem::take(strip) {
        text.trim_start()
    } else {
        text
    };
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
}

/// The end of a Jinja block, skipping string literals inside it.
fn find_close(s: &str, close: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if bytes[i..].starts_with(close.as_bytes()) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// `$( )`, `( )`, `<( )`: a fresh command context.
    Subst,
    /// `${ }`
    Param,
    /// `$(( ))`, with its own parenthesis depth.
    Arith(u32),
    Double,
    Backtick,
}

struct HereDoc {
    delimiter: String,
    strip_tabs: bool,
    /// A quoted delimiter (`<<'EOF'`): the body is literal, no line continuation.
    quoted: bool,
}

#[derive(Default)]
struct Lexer {
    frames: Vec<Frame>,
    single: bool,
    /// Inside `$'...'`, where a backslash escapes.
    ansi: bool,
    escape: bool,
    comment: bool,
    pending: Vec<HereDoc>,
    heredoc: Option<(HereDoc, String)>,
    /// Words of the current simple command, and the word being read.
    words: Vec<String>,
    word: String,
    /// The commands (words, and the word being read) whose `$( )` or `( )` the current
    /// command sits in.
    outer: Vec<(Vec<String>, String)>,
    problems: Vec<Problem>,
}

/// Commands that run their arguments through a shell again (or on another machine).
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"];
/// Commands that run the operand after a `-c` (or `env -S`) as a shell command line.
const SCRIPT_RUNNERS: &[&str] = &["su", "flock", "script", "env", "runuser"];
/// Commands that run (or evaluate) their arguments as code, with how the refusal names them.
const REPARSERS: &[(&str, &str)] = &[
    ("eval", "`eval`"),
    ("ssh", "`ssh` (the remote shell parses it again)"),
    ("watch", "`watch` (it runs its arguments through sh -c)"),
    ("trap", "`trap` (its action is shell code)"),
    ("alias", "`alias` (an alias is shell code)"),
    (
        "let",
        "`let` (it evaluates arithmetic, which can run commands in bash)",
    ),
];
impl Lexer {
    fn end_word(&mut self) {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
    }

    fn end_command(&mut self) {
        self.word.clear();
        self.words.clear();
    }

    /// Enters `$( )` or `( )`: a new command, remembering the one around it.
    fn open_subst(&mut self) {
        self.frames.push(Frame::Subst);
        let outer = (
            std::mem::take(&mut self.words),
            std::mem::take(&mut self.word),
        );
        self.outer.push(outer);
    }

    /// Leaves `$( )` or `( )`: the command around it goes on.
    fn close_subst(&mut self) {
        self.frames.pop();
        (self.words, self.word) = self.outer.pop().unwrap_or_default();
        self.word.push(')');
    }

    /// Whether the word being read surely has a character of its own. Values may render
    /// empty, and so may the text of a branch or loop; after either, a `#` could still start
    /// a comment.
    fn word_has_text(&self) -> bool {
        !self.word.contains(TAG) && self.word.chars().any(|c| c != VALUE)
    }

    fn in_code(&self) -> bool {
        !self.single && !self.comment && self.heredoc.is_none() && !self.escape
    }

    /// The quoting context a value is in, judged from the innermost frame out to the nearest
    /// command substitution (whose contents are parsed afresh).
    fn context_problem(&self, expr: &str) -> Option<String> {
        let shown = format!("{{{{ {expr} }}}}");
        if self.heredoc.is_some() {
            return Some(format!(
                "`{shown}` is inside a here-document, where quoting does not apply and a value with a newline could end it; pass the value as an argument or through `env:` instead"
            ));
        }
        if self.comment {
            return Some(format!(
                "`{shown}` is inside a shell comment; a value with a newline would end the comment and run the rest; move it out of the comment"
            ));
        }
        if self.single {
            return Some(format!(
                "`{shown}` is inside single quotes; medic quotes values itself, so quotes around it would let the value break out: remove the quotes around {shown} (inside a program such as awk or jq, pass it as an argument instead: jq --arg v {shown} '... $v ...')"
            ));
        }
        if self.escape {
            return Some(format!(
                "`{shown}` follows a backslash, which would escape the quote medic puts around the value; remove the backslash"
            ));
        }
        for frame in self.frames.iter().rev() {
            match frame {
                Frame::Subst => break,
                Frame::Param => {}
                Frame::Double => {
                    return Some(format!(
                        "`{shown}` is inside double quotes; medic quotes values itself, so quotes around it would let the value break out: remove the quotes around {shown} (inside a program such as awk or jq, pass it as an argument instead: jq --arg v {shown} '... $v ...')"
                    ))
                }
                Frame::Backtick => {
                    return Some(format!(
                        "`{shown}` is inside backticks, where quoting is processed twice; write $( ... ) instead of backticks"
                    ))
                }
                Frame::Arith(_) => {
                    return Some(format!(
                        "`{shown}` is inside an arithmetic expansion $(( )), which evaluates text as code; give the parameter a pattern such as '^[0-9]+$' and compute outside the shell, or use expr/test"
                    ))
                }
            }
        }
        None
    }

    /// A value that is an argument of a command which parses it as shell code again.
    ///
    /// Every word of the simple command counts, and the words of the commands whose `$( )` it
    /// sits in: a branch, an empty value or a variable (`$SUDO eval …`) can change which word
    /// is the command, so a re-parsing command anywhere among them refuses the value.
    fn command_problem(&self, expr: &str) -> Option<String> {
        let shown = format!("{{{{ {expr} }}}}");
        // Tags in a word mark text that a branch may leave out; the words are judged without.
        let untagged = |w: &String| w.replace(TAG, "");
        let current: Vec<String> = self.words.iter().map(untagged).collect();
        let current: Vec<&str> = current.iter().map(|w| w.as_str()).collect();
        let around: Vec<String> = self
            .outer
            .iter()
            .flat_map(|(words, word)| words.iter().chain([word]))
            .map(untagged)
            .collect();
        let all: Vec<&str> = around
            .iter()
            .map(|w| w.as_str())
            .chain(current.iter().copied())
            .collect();
        if let Some((_, what)) = all
            .iter()
            .find_map(|w| REPARSERS.iter().find(|(name, _)| *name == basename(w)))
        {
            return Some(format!(
                "`{shown}` is an argument of {what}, which would run the value as shell code; pass it as a positional argument of sh -c instead (sh -c '... \"$1\"' _ {shown}), or use the ssh action for commands on nodes"
            ));
        }
        if let Some(open) = current.iter().rposition(|w| *w == "[[") {
            if !current[open..].contains(&"]]") {
                return Some(format!(
                    "`{shown}` is inside [[ ]], where bash evaluates operands of -eq, -lt, ... as arithmetic (which can run commands); use [ ] or test instead"
                ));
            }
        }
        // `sh -c {{ v }}`, `bash -c -e -- {{ v }}`, `su -c`, `flock F -c`, `script -qc`,
        // `env -S`: the first operand after the flag is a script.
        for (i, w) in current.iter().enumerate() {
            let b = basename(w);
            let flag = |x: &str| -> bool {
                if b == "env" {
                    return x == "-S" || x == "--split-string" || x.starts_with("--split-string=");
                }
                x == "--command"
                    || (x.starts_with('-')
                        && !x.starts_with("--")
                        && x.len() > 1
                        && x[1..].chars().all(|c| c.is_ascii_alphabetic())
                        && x.contains('c'))
            };
            if !(SHELLS.contains(&b) || SCRIPT_RUNNERS.contains(&b)) {
                continue;
            }
            let Some(k) = current[i + 1..].iter().position(|x| flag(x)) else {
                continue;
            };
            // Options after the flag (`-e`, `-o pipefail`, `--`) come before the script.
            let mut j = i + 1 + k + 1;
            let mut script_taken = false;
            while j < current.len() {
                let x = current[j];
                if x == "-o" || x == "+o" {
                    j += 2;
                } else if x.starts_with('-') || x.starts_with('+') {
                    j += 1;
                } else {
                    script_taken = true;
                    break;
                }
            }
            if !script_taken {
                return Some(format!(
                    "`{shown}` is the script of `{} {}`, so the shell would run the value as code; pass it as a positional argument instead (sh -c '... \"$1\"' _ {shown})",
                    w,
                    current[i + 1 + k]
                ));
            }
        }
        None
    }

    fn value(&mut self, offset: usize, expr: &str) {
        let safe = expr
            .split('|')
            .skip(1)
            .any(|f| f.trim() == "safe" || f.trim().starts_with("safe("));
        if !safe {
            if let Some(message) = self
                .context_problem(expr)
                .or_else(|| self.command_problem(expr))
            {
                self.problems.push(Problem { offset, message });
            }
        }
        if self.in_code() {
            // The value is (part of) a word.
            self.word.push(VALUE);
        }
        self.escape = false;
    }

    fn tag(&mut self, offset: usize) {
        let open = self.single
            || self.comment
            || self.heredoc.is_some()
            || !self.pending.is_empty()
            || self.escape
            || self
                .frames
                .iter()
                .any(|f| matches!(f, Frame::Double | Frame::Backtick | Frame::Arith(_)));
        if open {
            self.problems.push(Problem {
                offset,
                message: "a `{% %}` tag inside quotes, backticks, a comment or a here-document makes the quoting around values depend on the branch taken; close them before the tag and reopen after".to_string(),
            });
        } else {
            // What a branch or loop adds to this word may be absent (see `word_has_text`).
            self.word.push(TAG);
        }
    }

    /// Reads one here-document delimiter after `<<` or `<<-`, starting at `i`.
    fn heredoc_delimiter(&mut self, chars: &[(char, usize)], mut i: usize) -> usize {
        let strip_tabs = chars.get(i).is_some_and(|(c, _)| *c == '-');
        if strip_tabs {
            i += 1;
        }
        while chars.get(i).is_some_and(|(c, _)| *c == ' ' || *c == '\t') {
            i += 1;
        }
        let mut delimiter = String::new();
        let mut quote: Option<char> = None;
        let mut quoted = false;
        while let Some(&(c, offset)) = chars.get(i) {
            match (quote, c) {
                (_, VALUE) => {
                    self.problems.push(Problem {
                        offset,
                        message: "a value is used as a here-document delimiter; write the delimiter literally".to_string(),
                    });
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => delimiter.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    quoted = true;
                }
                (None, '\\') => quoted = true,
                (None, c) if " \t\n;&|<>()".contains(c) => break,
                (None, c) => delimiter.push(c),
            }
            i += 1;
        }
        self.pending.push(HereDoc {
            delimiter,
            strip_tabs,
            quoted,
        });
        i
    }

    fn run(&mut self, chars: &[(char, usize)], exprs: &[&str]) {
        let mut values = exprs.iter();
        let mut i = 0;
        while i < chars.len() {
            let (c, offset) = chars[i];
            i += 1;
            if c == VALUE {
                let expr = values.next().copied().unwrap_or("");
                self.value(offset, expr);
            } else if c == TAG {
                self.tag(offset);
            } else if !self.heredoc_char(c) && !self.quoted_char(c) {
                i = match self.frame_char(chars, i, c) {
                    Some(i) => i,
                    None => self.code_char(chars, i, c),
                };
            }
        }
    }

    /// A character of a here-document's body (true), which only its delimiter line ends.
    fn heredoc_char(&mut self, c: char) -> bool {
        if let Some((doc, line)) = &mut self.heredoc {
            if c == '\n' && !doc.quoted && line.ends_with('\\') {
                // A line continuation: the next line belongs to this one.
                line.pop();
            } else if c == '\n' {
                let text = if doc.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if text == doc.delimiter {
                    self.heredoc = None;
                    self.start_heredoc();
                } else {
                    line.clear();
                }
            } else {
                line.push(c);
            }
            return true;
        }
        false
    }

    /// A character of a comment, of single quotes or right after a backslash (true).
    fn quoted_char(&mut self, c: char) -> bool {
        if self.comment {
            if c == '\n' {
                self.comment = false;
                self.newline();
            }
            return true;
        }
        if self.single {
            if self.ansi && self.escape {
                self.escape = false;
            } else if self.ansi && c == '\\' {
                self.escape = true;
            } else if c == '\'' {
                self.single = false;
                self.ansi = false;
            }
            self.word.push(c);
            return true;
        }
        if self.escape {
            self.escape = false;
            if c != '\n' {
                self.word.push(c);
            }
            return true;
        }
        false
    }

    /// A character inside double quotes, backticks or `(( ))`: the next index, or `None` in
    /// plain shell code. `i` is the index after `c`.
    fn frame_char(&mut self, chars: &[(char, usize)], mut i: usize, c: char) -> Option<usize> {
        let next = chars.get(i).map(|(c, _)| *c);
        match self.frames.last().copied() {
            Some(Frame::Double) => {
                match c {
                    '\\' => self.escape = true,
                    '"' => {
                        self.frames.pop();
                    }
                    '`' => self.frames.push(Frame::Backtick),
                    '$' => i = self.dollar(chars, i),
                    _ => {}
                }
                self.word.push(c);
                Some(i)
            }
            Some(Frame::Backtick) => {
                match c {
                    '\\' => self.escape = true,
                    '`' => {
                        self.frames.pop();
                    }
                    _ => {}
                }
                self.word.push(c);
                Some(i)
            }
            Some(Frame::Arith(depth)) => {
                match c {
                    '(' => *self.frames.last_mut().expect("arith") = Frame::Arith(depth + 1),
                    ')' if depth > 0 => {
                        *self.frames.last_mut().expect("arith") = Frame::Arith(depth - 1)
                    }
                    ')' if next == Some(')') => {
                        self.frames.pop();
                        i += 1;
                    }
                    '$' => i = self.dollar(chars, i),
                    _ => {}
                }
                self.word.push(c);
                Some(i)
            }
            _ => None,
        }
    }

    /// A character of plain shell code (top level, inside `$( )` or `${ }`): the next index.
    /// `i` is the index after `c`.
    fn code_char(&mut self, chars: &[(char, usize)], mut i: usize, c: char) -> usize {
        let next = chars.get(i).map(|(c, _)| *c);
        // Plain shell code: top level, inside `$( )` or `${ }`.
        match c {
            '\\' => {
                self.escape = true;
                self.word.push(c);
            }
            '\'' => {
                self.single = true;
                self.word.push(c);
            }
            '"' => {
                self.frames.push(Frame::Double);
                self.word.push(c);
            }
            '`' => {
                self.frames.push(Frame::Backtick);
                self.word.push(c);
            }
            '$' => {
                self.word.push(c);
                i = self.dollar(chars, i);
            }
            '#' if !self.word_has_text() && self.frames.last() != Some(&Frame::Param) => {
                // Also after a value or a tag, which may render empty.
                self.comment = true;
            }
            '}' if self.frames.last() == Some(&Frame::Param) => {
                self.frames.pop();
                self.word.push(c);
            }
            '(' if next == Some('(') && self.words.is_empty() && self.word.is_empty() => {
                // `(( expr ))`: an arithmetic command.
                self.frames.push(Frame::Arith(0));
                i += 1;
            }
            '(' => self.open_subst(),
            ')' if self.frames.last() == Some(&Frame::Subst) => self.close_subst(),
            ')' => self.end_command(),
            '<' if next == Some('<') => {
                self.end_word();
                if chars.get(i + 1).map(|(c, _)| *c) == Some('<') {
                    // A here-string, `<<<`: an ordinary word follows.
                    i += 2;
                } else {
                    i = self.heredoc_delimiter(chars, i + 1);
                }
            }
            '\n' => self.newline(),
            ';' | '&' | '|' => self.end_command(),
            ' ' | '\t' => self.end_word(),
            c => self.word.push(c),
        }
        i
    }

    fn newline(&mut self) {
        self.end_command();
        if self.heredoc.is_none() {
            self.start_heredoc();
        }
    }

    fn start_heredoc(&mut self) {
        if !self.pending.is_empty() {
            let doc = self.pending.remove(0);
            self.heredoc = Some((doc, String::new()));
        }
    }

    /// After a `$` at `i - 1`: opens `$(`, `$((`, `${`, `$'`, `$"`; refuses `$` before a value.
    fn dollar(&mut self, chars: &[(char, usize)], i: usize) -> usize {
        let at = |k: usize| chars.get(k).map(|(c, _)| *c);
        match (at(i), at(i + 1)) {
            (Some('('), Some('(')) => {
                self.frames.push(Frame::Arith(0));
                i + 2
            }
            (Some('('), _) => {
                self.open_subst();
                i + 1
            }
            (Some('{'), _) => {
                self.frames.push(Frame::Param);
                i + 1
            }
            (Some('\''), _) if self.frames.last() != Some(&Frame::Double) => {
                self.single = true;
                self.ansi = true;
                i + 1
            }
            (Some(VALUE), _) => {
                self.problems.push(Problem {
                    offset: chars[i].1,
                    message: "a `$` right before a value would make the shell read the quoted value as $'...' or a variable; remove the `$`".to_string(),
                });
                i
            }
            _ => i,
        }
    }
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Every placement in `source` (a shell command template) that would let a value become shell
/// syntax. Empty for a template that is safe, or whose blocks do not parse (reported elsewhere).
pub fn check(source: &str) -> Vec<Problem> {
    if !source.contains("{{") && !source.contains("{%") {
        return Vec::new();
    }
    let Some(pieces) = pieces(source) else {
        // The template compiler reports blocks that are not closed; anything it accepts that
        // this splitter cannot follow is refused rather than left unchecked.
        return vec![Problem {
            offset: 0,
            message: "medic cannot tell where the `{{ }}`, `{% %}` and `{# #}` blocks of this command end, so it cannot check how its values are quoted; simplify the Jinja in it".to_string(),
        }];
    };
    let mut chars: Vec<(char, usize)> = Vec::new();
    let mut exprs: Vec<&str> = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Text(t) => {
                let base = t.as_ptr() as usize - source.as_ptr() as usize;
                chars.extend(t.char_indices().map(|(i, c)| (c, base + i)));
            }
            Piece::Value { offset, expr } => {
                chars.push((VALUE, *offset));
                exprs.push(expr);
            }
            Piece::Tag { offset } => chars.push((TAG, *offset)),
        }
    }
    if exprs.is_empty() {
        // Only `{{ }}` puts values into the text; tags alone (loops over literals, `set`)
        // cannot let one out.
        return Vec::new();
    }
    let mut lexer = Lexer::default();
    lexer.run(&chars, &exprs);
    lexer.problems
}

#[cfg(test)]
mod tests;
