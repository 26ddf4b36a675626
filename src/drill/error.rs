//! The drill's errors: a usage error (bad input, a drill in the wrong state: exit 2) or a
//! failed step (exit 1).

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Bad input or a drill in the wrong state (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something the drill runs failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

pub(super) fn failed(what: &str, e: impl std::fmt::Display) -> DrillError {
    DrillError::Failed(format!("{what}: {e}"))
}
