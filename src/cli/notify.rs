//! The run's webhooks (`crate::notify`) around `run_operation`: the sink that sends the
//! notices, and at the end the wait for deliveries and their failures into history.

use std::sync::Arc;

use crate::engine::Redactor;
use crate::events::EventSink;
use crate::inventory::Inventory;
use crate::notify::{history_entries, Notifier, NotifySink};
use crate::store::{Actor, Commit, Operation, Store};

/// The notices of one run.
pub(super) struct RunNotices {
    notifier: Arc<Notifier>,
    sink: Arc<NotifySink>,
}

/// Puts the notifier in front of `sink` when the inventory lists webhooks (not for dry-runs).
pub(super) fn wrap(
    sink: Arc<dyn EventSink>,
    inventory: Option<&Inventory>,
    store: &mut Store,
    op: &Operation,
    actor: &Actor,
) -> Result<(Arc<dyn EventSink>, Option<RunNotices>), super::CliError> {
    let Some(inv) = inventory else {
        return Ok((sink, None));
    };
    let Some(notifier) = Notifier::start(&inv.notify) else {
        return Ok((sink, None));
    };
    let redactor = Redactor::new(&store.secrets(&op.id)?);
    let notifier = Arc::new(notifier);
    let notify = Arc::new(NotifySink::new(
        sink,
        notifier.clone(),
        op,
        &inv.name,
        actor,
        redactor,
    ));
    Ok((
        notify.clone(),
        Some(RunNotices {
            notifier,
            sink: notify,
        }),
    ))
}

/// After the run (the lease released): a notice of a refusal, the wait (at most the longest
/// `timeout:`) for deliveries, and each failed one in history.
pub(super) async fn finish(
    notices: Option<RunNotices>,
    refusal: Option<String>,
    mut store: Store,
    op: &str,
    actor: &Actor,
) -> Result<(), super::CliError> {
    let Some(notices) = notices else {
        return Ok(());
    };
    if let Some(error) = refusal {
        notices.sink.refused(&error);
    }
    let failures = notices.notifier.finish().await;
    if failures.is_empty() {
        return Ok(());
    }
    for f in &failures {
        eprintln!(
            "{} notice `{}` to {} not delivered: {}",
            console::style("warning:").yellow(),
            f.event.as_str(),
            f.target,
            f.error
        );
    }
    store.commit(
        op,
        Commit {
            history: history_entries(&failures, actor),
            ..Default::default()
        },
    )?;
    store.release();
    Ok(())
}

/// Whether the inventory file sets rules for every plan (`policy:`, `notify:` at its top
/// level): then a problem in it is an error for every plan, not a note, since ignoring it
/// would drop an approval policy or the webhooks without a word.
/// Only a regular file is read, and at most its first MiB (a FIFO or a device would block or
/// never end; the inventory loader refuses those itself).
pub(super) fn has_cluster_rules(path: &std::path::Path) -> bool {
    use std::io::Read as _;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
    read.is_ok()
        && text
            .lines()
            .any(|l| l.starts_with("policy:") || l.starts_with("notify:"))
}
