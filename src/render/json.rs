//! JSON for machines: the operation as a JSON object, and [`JsonCollector`], which gathers a
//! run's events for `-o json` (with a cap on each phase's output).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use crate::events::{Event, EventSink};
use crate::plan::PhaseId;
use crate::store::{format_time, Operation};

pub(crate) fn operation_json(op: &Operation) -> serde_json::Value {
    let mut params = serde_json::Map::new();
    for (k, v) in &op.params {
        params.insert(k.clone(), v.clone());
    }
    for k in &op.secret_params {
        params.insert(k.clone(), json!(crate::procedure::secret_placeholder(k)));
    }
    json!({
        "id": op.id,
        "procedure": op.procedure,
        "description": op.description,
        "state": op.state,
        "params": params,
        "created_at": format_time(op.created_at),
        "created_by": op.created_by,
        "reason": op.reason,
        "finished_at": op.finished_at.map(format_time),
        "fingerprint": op.fingerprint,
    })
}

/// Collects events for `-o json`.
#[derive(Default)]
pub(crate) struct JsonCollector {
    pub(crate) events: Mutex<Vec<serde_json::Value>>,
    /// Output (bytes, lines) collected per phase: past the log's head size or
    /// [`JSON_OUTPUT_LINES`], the rest of a phase's output is left out (one note says so), so
    /// a chatty command cannot grow the report without bound.
    output_seen: Mutex<HashMap<PhaseId, (usize, usize)>>,
}

/// Output lines per phase in a `-o json` report (an event costs far more memory than its text).
const JSON_OUTPUT_LINES: usize = 10_000;

impl EventSink for JsonCollector {
    fn emit(&self, event: &Event) {
        if let Event::PhaseOutput { id, line, .. } = event {
            let mut seen = self.output_seen.lock().expect("sizes lock");
            let (bytes, lines) = seen.entry(id.clone()).or_default();
            let full = |bytes: usize, lines: usize| {
                bytes > crate::store::LOG_HEAD_BYTES || lines > JSON_OUTPUT_LINES
            };
            let was_full = full(*bytes, *lines);
            *bytes += line.len() + 1;
            *lines += 1;
            if full(*bytes, *lines) {
                if !was_full {
                    let note = Event::PhaseOutput {
                        id: id.clone(),
                        stream: crate::action::Stream::Medic,
                        line: format!(
                            "… the rest of this phase's output is left out here; run `medic plan logs --phase={id}` for its head and tail"
                        ),
                    };
                    let value = serde_json::to_value(&note).expect("events serialize");
                    self.events.lock().expect("events lock").push(value);
                }
                return;
            }
        }
        let value = serde_json::to_value(event).expect("events serialize");
        self.events.lock().expect("events lock").push(value);
    }
}
