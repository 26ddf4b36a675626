//! Phase IDs: the path of a phase in a plan (`/etcd/remove`; the root is `/`).
//!
//! 1. [`PhaseId::parse`] normalises an ID that medic itself produced (stored plans, records).
//! 2. [`PhaseId::parse_input`] is exact, for what an operator or a procedure wrote: no empty
//!    value, no `//`, no trailing `/`, valid segments; the whole plan is only `/` spelled out.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phase path such as `/etcd/remove`; the root is `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhaseId(String);

impl PhaseId {
    pub(crate) fn root() -> Self {
        PhaseId("/".to_string())
    }

    /// Normalises a trusted path (stored IDs, paths built from validated segments):
    /// `etcd/remove`, `/etcd/remove/` and `/etcd/remove` are the same, and an empty text is
    /// the root. What an operator or a procedure wrote goes through [`PhaseId::parse_input`].
    pub(crate) fn parse(text: &str) -> Self {
        let trimmed = text.trim().trim_matches('/');
        if trimmed.is_empty() {
            Self::root()
        } else {
            PhaseId(format!("/{trimmed}"))
        }
    }

    /// Parses a phase ID someone typed (`--phase`, `requires:`), refusing anything that is not
    /// exactly one phase: an empty text (an unset shell variable must not mean "everything"),
    /// empty segments (`//`, `/a//b`), a trailing `/`, `.`/`..` and characters no phase ID has.
    /// The root is only `/` spelled out; a missing leading `/` is allowed (`etcd/remove`).
    pub(crate) fn parse_input(text: &str) -> Result<Self, PhaseIdError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(PhaseIdError::Empty);
        }
        if trimmed == "/" {
            return Ok(Self::root());
        }
        let bad = |reason: String| PhaseIdError::Malformed {
            text: text.to_string(),
            reason,
        };
        if trimmed.ends_with('/') {
            return Err(bad("it ends with `/`".into()));
        }
        let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
        for segment in body.split('/') {
            match segment {
                "" => return Err(bad("it has an empty segment (`//`)".into())),
                "." | ".." => {
                    return Err(bad(format!(
                        "`{segment}` is not a phase; phase IDs are absolute paths"
                    )))
                }
                s if !valid_phase_segment(s) => {
                    return Err(bad(format!(
                        "`{s}` is not a phase name (lowercase letters, digits, `-`, `_`, `.`)"
                    )))
                }
                _ => {}
            }
        }
        Ok(PhaseId(format!("/{body}")))
    }

    pub(crate) fn child(&self, segment: &str) -> Self {
        if self.0 == "/" {
            PhaseId(format!("/{segment}"))
        } else {
            PhaseId(format!("{}/{segment}", self.0))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0 == "/"
    }

    pub(crate) fn depth(&self) -> usize {
        if self.is_root() {
            0
        } else {
            self.0.matches('/').count()
        }
    }
}

/// Why a typed phase ID was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PhaseIdError {
    #[error("the phase ID is empty (an unset shell variable?); give one such as /etcd/remove, or / for the whole plan")]
    Empty,
    #[error("`{text}` is not a phase ID: {reason}; write it as /group/phase (see `medic plan`)")]
    Malformed { text: String, reason: String },
}

/// One segment of a phase path: lowercase letters, digits, `-`, `_` or `.`, starting and
/// ending with a letter or digit, at most 63 characters.
pub(crate) fn valid_phase_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes[bytes.len() - 1].is_ascii_lowercase() | bytes[bytes.len() - 1].is_ascii_digit()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

impl fmt::Display for PhaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_ids_normalise() {
        assert_eq!(PhaseId::parse("etcd/remove/").as_str(), "/etcd/remove");
        assert_eq!(PhaseId::parse("/").as_str(), "/");
        assert_eq!(PhaseId::parse("").as_str(), "/");
        assert_eq!(PhaseId::root().child("a").child("b").as_str(), "/a/b");
        assert_eq!(PhaseId::parse("/a/b").depth(), 2);
    }

    #[test]
    fn typed_phase_ids_are_exact() {
        let ok = [
            ("/", "/"),
            ("/a", "/a"),
            ("a/b", "/a/b"),
            (" /a/b-1 ", "/a/b-1"),
        ];
        for (text, id) in ok {
            assert_eq!(PhaseId::parse_input(text).unwrap().as_str(), id, "{text:?}");
        }
        assert_eq!(PhaseId::parse_input(""), Err(PhaseIdError::Empty));
        assert_eq!(PhaseId::parse_input("  "), Err(PhaseIdError::Empty));
        for bad in [
            "//", "/a//b", "/a/", "a/", "///", "/./a", "/a/..", "/A", "/a b", "/a/-x",
        ] {
            let err = PhaseId::parse_input(bad).unwrap_err();
            assert!(
                matches!(&err, PhaseIdError::Malformed { text, .. } if text == bad),
                "{bad:?}: {err}"
            );
        }
    }
}
