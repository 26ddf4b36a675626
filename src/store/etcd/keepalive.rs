//! Keeping the executor's etcd lease alive in the background, and noticing when it is gone.
//!
//! 1. Every third of the TTL, send a keep-alive and wait (a third of the TTL at most) for the
//!    answer; after a failure (a dead member picked, a broken stream) try again on a new
//!    stream a moment later.
//! 2. An answer with TTL 0 (the lease expired, or was revoked) marks the lease lost at once.
//! 3. No successful keep-alive for a whole TTL (etcd partitioned away, or without quorum)
//!    marks it lost too: by then etcd may have let it expire and another executor may hold it.
//!    The store then refuses every write for that operation (`EtcdStoreError::LeaseLost`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;

pub(super) async fn keep_alive(mut client: Client, id: i64, ttl: Duration, lost: Arc<AtomicBool>) {
    let round = ttl / 3;
    let mut last_ok = Instant::now();
    let mut stream = None;
    let mut wait = round;
    loop {
        tokio::time::sleep(wait).await;
        let attempt = async {
            if stream.is_none() {
                stream = Some(client.lease_keep_alive(id).await?);
            }
            let (keeper, answers) = stream.as_mut().expect("opened above");
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(answers.message().await?.map(|a| a.ttl()))
        };
        match tokio::time::timeout(round, attempt).await {
            Ok(Ok(Some(left))) if left > 0 => {
                last_ok = Instant::now();
                wait = round;
            }
            Ok(Ok(Some(_))) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            _ => {
                stream = None;
                wait = Duration::from_millis(100);
            }
        }
        if last_ok.elapsed() >= ttl {
            lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}
