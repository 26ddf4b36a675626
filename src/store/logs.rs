//! Phase output: lines stored in chunks (old databases hold one line per key), read back in
//! batches, and [`OutputCap`], which keeps the head and tail of a chatty phase's output.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{decode, now_ms, Store, StoreError};
use crate::action::Stream;
use crate::plan::PhaseId;

/// One line of a phase's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub time: u64,
    pub phase: PhaseId,
    pub stream: Stream,
    pub text: String,
}

/// Lines stored under one key: output is written in chunks, not a key per line.
pub(super) const LOG_CHUNK_LINES: usize = 512;

/// A stored log value: consecutive lines of one phase, or one line (databases written before
/// chunks). A chunk names its phase once; each line is `[time, stream, text]`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum StoredLog {
    Chunk {
        phase: PhaseId,
        lines: Vec<(u64, Stream, String)>,
    },
    Line(LogLine),
}

impl StoredLog {
    /// Appends the stored line(s) to `out` (both stores read logs through this).
    pub(super) fn append_to(self, out: &mut Vec<LogLine>) {
        match self {
            StoredLog::Chunk { phase, lines } => {
                out.extend(lines.into_iter().map(|(time, stream, text)| LogLine {
                    time,
                    phase: phase.clone(),
                    stream,
                    text,
                }))
            }
            StoredLog::Line(line) => out.push(line),
        }
    }
}

/// Output kept per phase run: its first [`LOG_HEAD_BYTES`] and its last [`LOG_TAIL_BYTES`].
pub(crate) const LOG_HEAD_BYTES: usize = 1024 * 1024;
pub(crate) const LOG_TAIL_BYTES: usize = 1024 * 1024;

/// Bounds what one run of a phase writes to its log, whatever the size of its output.
///
/// 1. Lines go to the log as they come until [`LOG_HEAD_BYTES`] are taken.
/// 2. After that they are held in a window of the last [`LOG_TAIL_BYTES`]; older ones leave it
///    and are counted.
/// 3. [`OutputCap::finish`] gives a marker saying how much was dropped, then the window.
#[derive(Debug)]
pub struct OutputCap {
    head_left: usize,
    head_closed: bool,
    tail: VecDeque<LogLine>,
    tail_bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl Default for OutputCap {
    fn default() -> Self {
        OutputCap {
            head_left: LOG_HEAD_BYTES,
            head_closed: false,
            tail: VecDeque::new(),
            tail_bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }
}

impl OutputCap {
    /// The line back if it goes to the log now; `None` if it is held for the tail.
    pub(crate) fn admit(&mut self, line: LogLine) -> Option<LogLine> {
        let size = line.text.len() + 1;
        if !self.head_closed && size <= self.head_left {
            self.head_left -= size;
            return Some(line);
        }
        self.head_closed = true;
        self.tail_bytes += size;
        self.tail.push_back(line);
        while self.tail_bytes > LOG_TAIL_BYTES {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.text.len() + 1;
            self.dropped_lines += 1;
            self.dropped_bytes += old.text.len() as u64 + 1;
        }
        None
    }

    /// What is left to log at the end of the run: a marker if lines were dropped, then the
    /// held tail.
    pub(crate) fn finish(&mut self, phase: &PhaseId) -> Vec<LogLine> {
        let mut out = Vec::new();
        if self.dropped_lines > 0 {
            out.push(LogLine {
                time: now_ms(),
                phase: phase.clone(),
                stream: Stream::Medic,
                text: format!(
                    "… {} bytes ({} lines) of output dropped here: a phase's log keeps its first {} MiB and its last {} MiB",
                    self.dropped_bytes,
                    self.dropped_lines,
                    LOG_HEAD_BYTES >> 20,
                    LOG_TAIL_BYTES >> 20
                ),
            });
        }
        out.extend(self.tail.drain(..));
        *self = OutputCap::default();
        out
    }
}

impl Store {
    /// The log lines of operation `id` stored after key `after` (from the start: `None`), in
    /// chunks until about `max_lines`; with the key to continue from, `None` at the end. Lets
    /// a reader print a long log batch by batch without holding the database meanwhile.
    pub(crate) fn logs_after(
        &mut self,
        id: &str,
        after: Option<&[u8]>,
        max_lines: usize,
    ) -> Result<(Vec<LogLine>, Option<Vec<u8>>), StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.logs_after(id, after, max_lines);
        }
        use std::ops::Bound;
        let prefix = format!("log/{id}/");
        let start = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.clone().into_bytes()),
        };
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            decode::<StoredLog>(&k, &v)?.append_to(&mut out);
            if out.len() >= max_lines {
                return Ok((out, Some(k.to_vec())));
            }
        }
        Ok((out, None))
    }
}
