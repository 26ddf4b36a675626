//! Delivering notices: a background task that POSTs each notice to the webhooks subscribed
//! to its event, with retries and a timeout per attempt, so a slow or dead receiver never
//! blocks or fails the run.
//!
//! 1. [`Notifier::start`] spawns one task per webhook, each behind a bounded queue ([`QUEUE`]
//!    notices), so a slow receiver delays no other; a full queue drops the notice (recorded
//!    as a failure), sending never waits.
//! 2. A task tries its webhook up to [`ATTEMPTS`] times: a 2xx answer is delivered; an
//!    error, a timeout or another status is retried after a short backoff.
//! 3. [`Notifier::finish`] closes the queue and waits at most the longest `timeout:` for what
//!    is still in flight, then returns every failure (for history).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::config::{NotifyEvent, NotifyTarget};

/// Notices the queue holds before it drops new ones.
pub(crate) const QUEUE: usize = 64;
/// Tries per webhook and notice.
pub(crate) const ATTEMPTS: u32 = 3;
/// Pause before the second try; doubled for each further one.
const BACKOFF: Duration = Duration::from_millis(300);

/// One notice: its event and the JSON body every subscribed webhook receives.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    pub(crate) event: NotifyEvent,
    pub(crate) body: serde_json::Value,
}

/// A delivery that failed (after its retries), for history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub(crate) event: NotifyEvent,
    /// The webhook's origin (scheme://host:port; the path may be a secret).
    pub(crate) target: String,
    pub(crate) error: String,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The clients of the delivery tasks: plain HTTP always works; HTTPS needs the system's CA
/// certificates, and when they cannot be loaded only https:// deliveries fail.
#[derive(Clone)]
struct Clients {
    http: Client<HttpConnector, Full<Bytes>>,
    https: Result<HttpsClient, String>,
}

/// The queues into the delivery tasks (one per webhook), and what they report back.
pub(crate) struct Notifier {
    queues: Mutex<Vec<(NotifyTarget, mpsc::Sender<Notice>)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    failures: Arc<Mutex<Vec<Failure>>>,
    /// Deliveries queued and not yet finished with.
    in_flight: Arc<AtomicUsize>,
    /// How long [`Notifier::finish`] waits: the longest `timeout:`.
    wait: Duration,
}

impl Notifier {
    /// Starts one delivery task per webhook; `None` when there are none (nothing runs).
    pub(crate) fn start(targets: &[NotifyTarget]) -> Option<Notifier> {
        if targets.is_empty() {
            return None;
        }
        let failures = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let wait = targets
            .iter()
            .map(|t| Duration::from_secs_f64(t.timeout_secs))
            .max()
            .unwrap_or_default();
        let clients = Clients {
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            https: https_client(),
        };
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for target in targets {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push((target.clone(), tx));
            tasks.push(tokio::spawn(deliver_each(
                target.clone(),
                clients.clone(),
                rx,
                failures.clone(),
                in_flight.clone(),
            )));
        }
        Some(Notifier {
            queues: Mutex::new(queues),
            tasks: Mutex::new(tasks),
            failures,
            in_flight,
            wait,
        })
    }

    /// Queues a notice for each webhook subscribed to its event, without waiting; a full
    /// queue drops it (recorded as a failure).
    pub(crate) fn send(&self, notice: Notice) {
        let queues = self.queues.lock().expect("queues lock");
        for (target, tx) in queues.iter() {
            if !target.events.contains(&notice.event) {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if tx.try_send(notice.clone()).is_err() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.failures.lock().expect("failures lock").push(Failure {
                    event: notice.event,
                    target: target.origin(),
                    error: format!("dropped: more than {QUEUE} notices waiting"),
                });
            }
        }
    }

    /// Closes the queues, waits at most the longest timeout for deliveries in flight, and
    /// returns every failed one.
    pub(crate) async fn finish(&self) -> Vec<Failure> {
        self.queues.lock().expect("queues lock").clear();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        let all = async {
            for task in tasks.iter_mut() {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(self.wait, all).await.is_err() {
            tasks.iter().for_each(|t| t.abort());
            let left = self.in_flight.load(Ordering::SeqCst);
            self.failures.lock().expect("failures lock").push(Failure {
                event: NotifyEvent::Completed,
                target: "(webhooks)".into(),
                error: format!(
                    "{left} notice(s) still in flight when medic exited (waited {}s)",
                    self.wait.as_secs_f64()
                ),
            });
        }
        std::mem::take(&mut *self.failures.lock().expect("failures lock"))
    }
}

/// The delivery task of one webhook: its notices in order.
async fn deliver_each(
    target: NotifyTarget,
    clients: Clients,
    mut rx: mpsc::Receiver<Notice>,
    failures: Arc<Mutex<Vec<Failure>>>,
    in_flight: Arc<AtomicUsize>,
) {
    while let Some(notice) = rx.recv().await {
        let body = Bytes::from(serde_json::to_vec(&notice.body).unwrap_or_default());
        let result = if target.url.starts_with("https://") {
            match &clients.https {
                Ok(client) => deliver(client, &target, body).await,
                Err(e) => Err(e.clone()),
            }
        } else {
            deliver(&clients.http, &target, body).await
        };
        if let Err(error) = result {
            failures.lock().expect("failures lock").push(Failure {
                event: notice.event,
                target: target.origin(),
                error,
            });
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP/1 client for https:// (the system's CA certificates).
fn https_client() -> Result<HttpsClient, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// POSTs `body` to `target`, retrying; the last error if no attempt got a 2xx answer.
async fn deliver<C>(
    client: &Client<C, Full<Bytes>>,
    target: &NotifyTarget,
    body: Bytes,
) -> Result<(), String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let timeout = Duration::from_secs_f64(target.timeout_secs);
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
        }
        let request = hyper::Request::post(&target.url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("medic/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let answer = tokio::time::timeout(timeout, async {
            let response = client.request(request).await.map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            })?;
            let status = response.status();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            Ok::<_, String>(status)
        })
        .await;
        match answer {
            Ok(Ok(status)) if status.is_success() => return Ok(()),
            Ok(Ok(status)) => last = format!("answered {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {}s", target.timeout_secs),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} attempts)"))
}
