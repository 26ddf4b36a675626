//! Waiting for the next change of the store, for followers (`medic plan --tail`): on etcd a
//! watch from a mark taken before the follower read; on sled (no change feed across processes)
//! a plain sleep, the follower's poll.

use std::time::Duration;

use super::{Store, StoreError};

/// How often a follower of a sled store reads again.
const POLL: Duration = Duration::from_millis(500);
/// The longest an etcd follower waits without a change (it then reads again: an executor
/// whose lease expired changes a key too, but a read every few seconds costs little).
const WATCH_AT_MOST: Duration = Duration::from_secs(5);

/// A point in the store's history taken before a follower reads (see [`Store::wait_for_change`]).
pub(crate) struct ChangeMark(Option<i64>);

impl Store {
    /// Marks now, before the reads whose result the follower shows.
    pub(crate) fn change_mark(&mut self) -> Result<ChangeMark, StoreError> {
        match &mut self.etcd {
            Some(e) => Ok(ChangeMark(Some(e.change_mark()?))),
            None => Ok(ChangeMark(None)),
        }
    }

    /// Returns when the store changed after `mark` (etcd) or after the poll interval (sled).
    /// Holds no database meanwhile: call it after [`Store::release`].
    pub(crate) async fn wait_for_change(&mut self, mark: ChangeMark) -> Result<(), StoreError> {
        match (&mut self.etcd, mark.0) {
            (Some(e), Some(revision)) => {
                e.wait_for_change(revision, WATCH_AT_MOST)?;
                // A watch etcd ends at once (compacted start) must not become a busy loop.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            }
            _ => {
                tokio::time::sleep(POLL).await;
                Ok(())
            }
        }
    }
}
