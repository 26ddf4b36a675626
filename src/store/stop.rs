//! Stop requests: `medic plan stop` asks a running executor to stop through the store (its own
//! sled tree, one key per operation), so the request reaches the executor wherever it runs.
//!
//! 1. `plan stop` reads the lease and writes a [`StopRequest`] naming the holder (pid, host).
//! 2. The executor polls the key (`engine/control.rs`) and honours a request made for it
//!    after it started; older requests (a previous executor's) are ignored.

use serde::{Deserialize, Serialize};

use super::{encode, Store, StoreError};

const TREE: &str = "stop_requests";

/// A request to stop the executor `pid` on `host`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StopRequest {
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) requested_at: u64,
    /// Who asked: `user@host (pid N)`.
    pub(crate) by: String,
    pub(crate) reason: Option<String>,
    /// Exit at once, leaving the running phase interrupted (the second Ctrl-C).
    pub(crate) now: bool,
}

impl Store {
    /// Records `request` for operation `op` (replacing an earlier one) and flushes it.
    pub(crate) fn request_stop(
        &mut self,
        op: &str,
        request: &StopRequest,
    ) -> Result<(), StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.request_stop(op, request);
        }
        if self.read_copy.is_some() {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
        }
        let tree = self.db()?.open_tree(TREE)?;
        let written = tree
            .insert(op.as_bytes(), encode(request))
            .and_then(|_| tree.flush().map(|_| ()));
        written.map_err(|e| self.write_failure(e))
    }

    /// The latest stop request for operation `op`, if any.
    pub(crate) fn stop_request(&mut self, op: &str) -> Result<Option<StopRequest>, StoreError> {
        if let Some(e) = &mut self.etcd {
            return e.stop_request(op);
        }
        let tree = self.db()?.open_tree(TREE)?;
        match tree.get(op.as_bytes())? {
            Some(v) => super::decode(op.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }
}
