//! Waiting for a change in the etcd state store (`medic plan --tail`): an etcd watch from a
//! revision the reader marked before it read, so a change made while it read wakes it at once
//! and an idle follower costs etcd one watch instead of a read every half second.

use std::time::Duration;

use etcd_client::WatchOptions;

use super::{EtcdStore, CALL_TIMEOUT};
use crate::store::StoreError;

impl EtcdStore {
    /// The store's current revision: everything a read made after this returns is at or after
    /// it (see [`EtcdStore::wait_for_change`]).
    pub(crate) fn change_mark(&mut self) -> Result<i64, StoreError> {
        let key = self.config.prefix.clone();
        let revision = self.call("read the state store's revision", move |mut client| {
            let key = key.clone();
            async move {
                let resp = client.get(key, None).await?;
                Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
            }
        })?;
        Ok(revision)
    }

    /// Waits until a key under the store's prefix changes after revision `mark`, or `max`
    /// passes. A watch etcd cancels (e.g. its start was compacted away) returns at once; the
    /// caller reads again either way.
    pub(crate) fn wait_for_change(&mut self, mark: i64, max: Duration) -> Result<(), StoreError> {
        let key = self.config.prefix.clone();
        self.call_with(
            max + CALL_TIMEOUT,
            "watch the state store",
            move |mut client| {
                let key = key.clone();
                async move {
                    let options = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(mark + 1);
                    let mut stream = client.watch(key, Some(options)).await?;
                    let wait = async {
                        // The first response only says the watch was created.
                        while let Some(resp) = stream.message().await? {
                            if resp.canceled() || !resp.events().is_empty() {
                                break;
                            }
                        }
                        Ok::<(), etcd_client::Error>(())
                    };
                    match tokio::time::timeout(max, wait).await {
                        Ok(result) => result,
                        Err(_) => Ok(()),
                    }
                }
            },
        )?;
        Ok(())
    }
}
