//! Bounded reading of a command's output, shared by `run`, `wait` and `ssh`.
//!
//! 1. [`read_line`] reads one line but keeps at most [`MAX_LINE`] bytes of it: an endless line
//!    (no newline in 100 MB) is cut, with a note saying how much was dropped, instead of held.
//! 2. [`Captured`] keeps the first [`MAX_CAPTURED`] bytes of a stream for the action's result
//!    (`stdout`, `json`, captures) and its last lines for error messages; it says whether it
//!    dropped anything, so a result built from cut output is never mistaken for the whole.

use std::collections::VecDeque;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest line kept; the rest of a longer line is dropped (and counted).
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// What follows the kept part of a cut line (then how much was dropped).
pub(crate) const CUT_MARKER: &str = " … [line cut: ";
/// Output kept in memory per stream for an action's result.
pub(crate) const MAX_CAPTURED: usize = 1024 * 1024;
/// Non-empty last lines kept for error messages.
const TAIL_LINES: usize = 3;

/// The next line of `reader` (without its `\n` or `\r\n`), at most [`MAX_LINE`] bytes of it,
/// as text (invalid UTF-8 replaced); `None` at the end. `buf` is scratch space, reused.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    buf.clear();
    let mut dropped: u64 = 0;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        read_any = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let take = MAX_LINE.saturating_sub(buf.len()).min(chunk.len());
        buf.extend_from_slice(&chunk[..take]);
        dropped += (chunk.len() - take) as u64;
        let used = newline.map(|i| i + 1).unwrap_or(available.len());
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let mut line = String::from_utf8_lossy(buf).into_owned();
    if dropped > 0 {
        line.push_str(&format!(
            "{CUT_MARKER}{dropped} more bytes not kept; lines are kept up to {} KiB]",
            MAX_LINE / 1024
        ));
    }
    Ok(Some(line))
}

/// One stream's text for the result: its head up to [`MAX_CAPTURED`], and its last lines.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured {
    pub text: String,
    /// Lines were dropped after the head was full.
    pub truncated: bool,
    last: VecDeque<String>,
}

impl Captured {
    pub(crate) fn push_line(&mut self, line: &str) {
        if !self.truncated && self.text.len() + line.len() < MAX_CAPTURED {
            self.text.push_str(line);
            self.text.push('\n');
        } else {
            self.truncated = true;
        }
        if !line.trim().is_empty() {
            if self.last.len() == TAIL_LINES {
                self.last.pop_front();
            }
            self.last.push_back(line.to_string());
        }
    }

    /// The last non-empty lines, joined for an error message.
    pub(crate) fn tail(&self) -> String {
        self.last.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// The stream parsed as JSON, only when it was kept whole (a cut document is not parsed).
    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        if self.truncated {
            None
        } else {
            serde_json::from_str(self.text.trim()).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = tokio::io::BufReader::with_capacity(1024, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(l) = read_line(&mut reader, &mut buf).await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_and_long_ones_cut() {
        assert_eq!(lines(b"a\r\nb\n\nc").await, ["a", "b", "", "c"]);
        assert!(lines(b"").await.is_empty());
        let mut long = vec![b'x'; MAX_LINE + 5000];
        long.extend_from_slice(b"\nnext\n");
        let got = lines(&long).await;
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with(&"x".repeat(MAX_LINE)));
        assert!(
            got[0].contains("line cut: 5000 more bytes"),
            "{}",
            &got[0][MAX_LINE..]
        );
        assert_eq!(got[1], "next");
        assert_eq!(lines(b"\xff ok\n").await, ["\u{fffd} ok"]);
    }

    #[test]
    fn captured_keeps_the_head_and_the_last_lines() {
        let mut c = Captured::default();
        c.push_line("{\"a\": 1}");
        assert_eq!(c.json(), Some(serde_json::json!({"a": 1})));
        let line = "y".repeat(1000);
        for _ in 0..2000 {
            c.push_line(&line);
        }
        c.push_line("the end");
        assert!(c.truncated);
        assert!(c.text.len() < MAX_CAPTURED);
        assert_eq!(c.json(), None);
        assert!(c.tail().ends_with(" | the end"));
    }
}
