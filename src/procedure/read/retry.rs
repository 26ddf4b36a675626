//! Reading how a phase's action is attempted: `timeout:`, `retries:`, `retry_delay:` and
//! `idempotent:` (whether running it again is safe).

use crate::procedure::PhaseSpec;
use crate::source::{start_span, Fields, Reader};

pub(super) fn read_retry(fields: &Fields<'_>, spec: &mut PhaseSpec, what: &str, r: &mut Reader) {
    if let Some(n) = fields.get("timeout") {
        spec.timeout_secs = r.duration(n, &format!("{what}: timeout"));
    }
    if let Some(n) = fields.get("retries") {
        match r.uint(n, &format!("{what}: retries")) {
            Some(v) if v > 100 => r.error(
                &start_span(n),
                format!("{what}: retries must be at most 100, not {v}"),
            ),
            Some(v) => spec.retries = v as u32,
            None => {}
        }
    }
    if let Some(n) = fields.get("retry_delay") {
        spec.retry_delay_secs = r
            .duration_or_zero(n, &format!("{what}: retry_delay"))
            .unwrap_or(1.0);
    }
    if let Some(n) = fields.get("idempotent") {
        spec.idempotent = r.bool(n, &format!("{what}: idempotent"));
    }
}
