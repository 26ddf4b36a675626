//! The inventory's `notify:` list: where medic POSTs a notice of a run's events, read and
//! checked like the rest of the inventory (every problem with file:line:col, at once).
//!
//! ```yaml
//! notify:
//!   - url: https://chat.example/hooks/T0123
//!     events: [started, paused, failed, completed]   # default: all four
//!     timeout: 5s                                    # per attempt; default 5s, at most 60s
//! ```

use marked_yaml::Node as YamlNode;
use serde::Serialize;

use crate::source::{start_span, Fields, Reader};

/// The default time one delivery attempt may take.
pub const DEFAULT_TIMEOUT_SECS: f64 = 5.0;
/// The longest `timeout:`: the run waits up to this at exit for notices still in flight.
pub const MAX_TIMEOUT_SECS: f64 = 60.0;

/// What a run reports to webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Started,
    Paused,
    Failed,
    Completed,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 4] = [
        NotifyEvent::Started,
        NotifyEvent::Paused,
        NotifyEvent::Failed,
        NotifyEvent::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::Paused => "paused",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Completed => "completed",
        }
    }
}

/// One webhook of `notify:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotifyTarget {
    /// An `http://` or `https://` URL (https checks the server against the system's CA
    /// certificates).
    pub url: String,
    pub events: Vec<NotifyEvent>,
    pub timeout_secs: f64,
}

impl NotifyTarget {
    /// The URL without its path and query, for history and messages: a webhook's path often
    /// is its secret (chat tools put the token there).
    pub fn origin(&self) -> String {
        match self.url.parse::<hyper::Uri>() {
            Ok(uri) => format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map(|a| a.as_str()).unwrap_or_default()
            ),
            Err(_) => "(invalid url)".into(),
        }
    }
}

/// `notify:`, a list of webhooks.
pub(crate) fn read_targets(node: &YamlNode, r: &mut Reader) -> Vec<NotifyTarget> {
    let YamlNode::Sequence(items) = node else {
        r.error(
            &start_span(node),
            "notify must be a list of webhooks (`- url: https://…`)",
        );
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| read_target(item, r))
        .collect()
}

fn read_target(item: &YamlNode, r: &mut Reader) -> Option<NotifyTarget> {
    let f = Fields::new(item, "a notify entry", &["url", "events", "timeout"], r)?;
    let Some(url_node) = f.get("url") else {
        r.error(
            f.span(),
            "every notify entry needs a `url:` (http:// or https://)",
        );
        return None;
    };
    let url = r.string(url_node, "notify.url")?.as_str().to_string();
    if let Err(e) = check_url(&url) {
        r.error(&start_span(url_node), format!("notify.url: {e}"));
    }
    let events = match f.get("events") {
        Some(n) => read_events(n, r),
        None => NotifyEvent::ALL.to_vec(),
    };
    let timeout_secs = match f.get("timeout") {
        Some(n) => {
            let secs = r.duration(n, "notify.timeout")?;
            if secs > MAX_TIMEOUT_SECS {
                r.error(
                    &start_span(n),
                    format!("notify.timeout must be at most 60s (medic waits that long at exit for a notice in flight), not {secs}s"),
                );
                return None;
            }
            secs
        }
        None => DEFAULT_TIMEOUT_SECS,
    };
    Some(NotifyTarget {
        url,
        events,
        timeout_secs,
    })
}

fn read_events(node: &YamlNode, r: &mut Reader) -> Vec<NotifyEvent> {
    let YamlNode::Sequence(items) = node else {
        r.error(
            &start_span(node),
            "notify.events must be a list such as [started, paused, failed, completed]",
        );
        return Vec::new();
    };
    let mut events = Vec::new();
    for item in items.iter() {
        let Some(s) = r.scalar(item, "a notify event") else {
            continue;
        };
        match NotifyEvent::ALL.iter().find(|e| e.as_str() == s.as_str()) {
            Some(e) if !events.contains(e) => events.push(*e),
            Some(_) => {}
            None => r.error(
                &start_span(item),
                format!(
                    "unknown notify event `{}`; use started, paused, failed or completed",
                    s.as_str()
                ),
            ),
        }
    }
    if items.is_empty() {
        r.error(
            &start_span(node),
            "notify.events is empty; leave it out for all events, or name some of started, paused, failed, completed",
        );
    }
    events
}

/// An absolute http:// or https:// URL with a host, and nothing a shell or a log would misread.
fn check_url(url: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "only http:// and https:// URLs are supported, not `{url}`"
            ))
        }
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => Err(
            "must not carry a user or password (user:pass@host); put a token in the path if the receiver needs one".into(),
        ),
        Some(a) if !a.host().is_empty() => Ok(()),
        _ => Err(format!("`{url}` has no host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("https://chat.example/hooks/T1").is_ok());
        for bad in [
            "ftp://x/y",
            "file:///etc/passwd",
            "chat.example/hook",
            "http://a b/",
            "https://user:pw@chat.example/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origin_leaves_out_the_path() {
        let t = NotifyTarget {
            url: "https://chat.example:8443/hooks/SECRET?x=1".into(),
            events: vec![],
            timeout_secs: 5.0,
        };
        assert_eq!(t.origin(), "https://chat.example:8443");
    }
}
