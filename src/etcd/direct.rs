//! The direct transport: the `etcd-client` crate against the inventory's endpoints and TLS
//! files. Every call goes to the first endpoint that answers, so a dead member never fails it.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};

use super::error::{EtcdError, Refusal};
use super::{hex_id, short_error, MemberHealth, MemberInfo, MemberStatus};
use super::{CALL_TIMEOUT, HEALTH_TIMEOUT};
use crate::inventory::EtcdSettings;

fn read_tls(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::ReadTls {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn tls(settings: &EtcdSettings) -> Result<Option<TlsOptions>, EtcdError> {
    let mut tls = TlsOptions::new();
    let mut any = false;
    if let Some(ca) = &settings.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read_tls("etcd CA", ca)?));
        any = true;
    }
    if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
        let c = read_tls("etcd client cert", cert)?;
        let k = read_tls("etcd client key", key)?;
        tls = tls.identity(Identity::from_pem(c, k));
        any = true;
    }
    Ok(any.then_some(tls))
}

async fn client(
    settings: &EtcdSettings,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Client, EtcdError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout.max(CALL_TIMEOUT.min(timeout * 5)));
    if let Some(tls) = tls(settings)? {
        options = options.with_tls(tls);
    }
    let connect = Client::connect(endpoints, Some(options));
    tokio::time::timeout(timeout + Duration::from_secs(1), connect)
        .await
        .map_err(|_| EtcdError::ConnectTimeout {
            endpoints: endpoints.join(","),
            secs: timeout.as_secs(),
        })?
        .map_err(|source| EtcdError::Connect {
            endpoints: endpoints.join(","),
            source,
        })
}

/// A client on one member's client URL (calls that must reach that member).
pub(super) async fn connect_to(settings: &EtcdSettings, url: &str) -> Result<Client, EtcdError> {
    client(settings, &[url.to_string()], CALL_TIMEOUT).await
}

/// A client on the first endpoint that answers: a dead member must not fail the call
/// (the crate's balanced channel may route a request to it).
pub(crate) async fn any_client(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    let mut errors = Vec::new();
    for endpoint in &settings.endpoints {
        match client(settings, std::slice::from_ref(endpoint), HEALTH_TIMEOUT).await {
            Ok(mut c) => match tokio::time::timeout(HEALTH_TIMEOUT, c.status()).await {
                Ok(Ok(_)) => {
                    return client(settings, std::slice::from_ref(endpoint), CALL_TIMEOUT).await
                }
                Ok(Err(e)) => errors.push(format!("{endpoint}: {}", short_error(&e.to_string()))),
                Err(_) => errors.push(format!("{endpoint}: no answer")),
            },
            Err(e) => errors.push(short_error(&e.to_string())),
        }
    }
    Err(EtcdError::NoEndpointAnswered { errors })
}

pub(super) async fn member_list(s: &EtcdSettings) -> Result<Vec<MemberInfo>, EtcdError> {
    let mut client = any_client(s).await?;
    let resp = client
        .member_list()
        .await
        .map_err(|source| EtcdError::MemberList { source })?;
    Ok(resp
        .members()
        .iter()
        .map(|m| MemberInfo {
            id: hex_id(m.id()),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
            started: !m.name().is_empty(),
        })
        .collect())
}

/// Probes one member on its own client URLs, with a short timeout.
async fn probe(s: &EtcdSettings, m: &MemberInfo) -> MemberHealth {
    let mut h = MemberHealth {
        id: m.id.clone(),
        name: m.name.clone(),
        endpoint: m.client_urls.first().cloned(),
        healthy: false,
        is_learner: m.is_learner,
        started: m.started,
        error: None,
    };
    if m.client_urls.is_empty() {
        h.error = Some("not started".into());
        return h;
    }
    match client(s, &m.client_urls, HEALTH_TIMEOUT).await {
        Ok(mut c) => match tokio::time::timeout(HEALTH_TIMEOUT, c.status()).await {
            Ok(Ok(_)) => h.healthy = true,
            Ok(Err(e)) => h.error = Some(short_error(&e.to_string())),
            Err(_) => h.error = Some(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs())),
        },
        Err(e) => h.error = Some(short_error(&e.to_string())),
    }
    h
}

pub(super) async fn health(s: &EtcdSettings, members: &[MemberInfo]) -> Vec<MemberHealth> {
    let mut out = Vec::new();
    for m in members {
        out.push(probe(s, m).await);
    }
    out
}

pub(super) async fn status(
    s: &EtcdSettings,
    members: &[MemberInfo],
) -> Vec<Result<MemberStatus, String>> {
    let mut out = Vec::new();
    for m in members.iter().filter(|m| !m.client_urls.is_empty()) {
        let r = async {
            let mut c = client(s, &m.client_urls, HEALTH_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let st = c.status().await.map_err(|e| e.to_string())?;
            let member_id = st.header().map(|h| h.member_id()).unwrap_or(0);
            Ok(MemberStatus {
                endpoint: m.client_urls[0].clone(),
                member_id: hex_id(member_id),
                leader: hex_id(st.leader()),
                is_leader: st.leader() == member_id,
                raft_index: st.raft_index(),
                raft_term: st.raft_term(),
                revision: st.header().map(|h| h.revision()).unwrap_or(0),
                db_size: st.db_size(),
                version: st.version().to_string(),
            })
        };
        out.push(r.await);
    }
    out
}

/// See [`super::Transport::member_remove`]: waits for a leader (other than a dead target),
/// retries calls that found no leader or no answer, and counts "member not found" as done.
pub(super) async fn member_remove(
    s: &EtcdSettings,
    id: u64,
    target_healthy: bool,
) -> Result<(), EtcdError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut client = match any_client(s).await {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let leader = client.status().await.map(|st| st.leader()).unwrap_or(0);
        if leader == 0 || (leader == id && !target_healthy) {
            last = format!(
                "no leader among the surviving members yet (leader {})",
                hex_id(leader)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(5), client.member_remove(id)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(source)) => {
                let text = source.to_string();
                match Refusal::of(&text) {
                    Refusal::MemberNotFound => return Ok(()),
                    // An unhealthy cluster is refused with the status "unavailable" too.
                    Refusal::Unavailable | Refusal::UnhealthyCluster => last = short_error(&text),
                    kind => {
                        return Err(EtcdError::MemberRemove {
                            id: hex_id(id),
                            kind,
                            source,
                        })
                    }
                }
            }
            Err(_) => last = "no answer within 5s".into(),
        }
    }
    Err(EtcdError::MemberRemoveGaveUp {
        id: hex_id(id),
        last,
    })
}

pub(super) async fn member_add(
    s: &EtcdSettings,
    name: &str,
    peer_urls: &[String],
    learner: bool,
) -> Result<MemberInfo, EtcdError> {
    let mut client = any_client(s).await?;
    let options = learner.then(|| MemberAddOptions::new().with_is_learner());
    let resp = client
        .member_add(peer_urls, options)
        .await
        .map_err(|source| EtcdError::MemberAdd {
            name: name.to_string(),
            kind: Refusal::of(&source.to_string()),
            source,
        })?;
    let m = resp.member().ok_or(EtcdError::NoMemberAdded)?;
    Ok(MemberInfo {
        id: hex_id(m.id()),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
        started: false,
    })
}

pub(super) async fn member_promote(s: &EtcdSettings, id: u64) -> Result<(), EtcdError> {
    let mut client = any_client(s).await?;
    client
        .member_promote(id)
        .await
        .map(|_| ())
        .map_err(|source| EtcdError::MemberPromote {
            kind: Refusal::of(&source.to_string()),
            source,
        })
}

/// The snapshot's bytes, streamed from the first endpoint that answers.
pub(super) async fn snapshot(s: &EtcdSettings) -> Result<Vec<u8>, EtcdError> {
    let mut client = any_client(s).await?;
    let mut stream = client
        .snapshot()
        .await
        .map_err(|source| EtcdError::Snapshot { source })?;
    let mut data = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|source| EtcdError::Snapshot { source })?
    {
        data.extend_from_slice(chunk.blob());
    }
    Ok(data)
}
