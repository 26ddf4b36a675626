//! Writing a [`Commit`] to etcd as one transaction, and the executor lease's life.
//!
//! 1. The commit becomes a list of writes; history entries and log chunks get their numbers
//!    from the operation's head key (`P/head/OP`) as the transaction is built.
//! 2. The transaction compares the head's mod revision (the operation's expected revision:
//!    nobody wrote between our read and our write), the lease key (an executor: still ours,
//!    attached to our etcd lease; taking the lease: nobody holds it), and for a new operation
//!    that it does not exist yet. It is committed to a quorum before the call returns.
//! 3. On a failed compare the store reads why: the lease lost or held by another executor, or
//!    the operation already there, are errors (nothing was written); a head moved by a
//!    lease-less writer (an approval) is read again and the transaction retried.
//! 4. Output too large for one transaction goes first, in transactions of its own under the
//!    same compares: an orphaned log chunk is harmless, a state change is never split.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::error::EtcdStoreError;
use super::{decode, keepalive, EtcdStore, Head, Held};
use crate::store::logs::{StoredLog, LOG_CHUNK_LINES};
use crate::store::{encode, Commit, HistoryEntry, LogLine, StoreError};

/// Most bytes a log chunk holds (etcd's request limit is 1.5 MiB by default).
const CHUNK_BYTES: usize = 64 * 1024;
/// What one transaction carries at most (etcd's defaults: 128 operations, 1.5 MiB).
const TXN_OPS: usize = 96;
const TXN_BYTES: usize = 1024 * 1024;

enum Write {
    Put(String, Vec<u8>),
    /// Attached to the executor's etcd lease: deleted by etcd when the lease expires.
    PutLeased(String, Vec<u8>),
    Delete(String),
    Hist(HistoryEntry),
    Log(Vec<u8>),
}

impl Write {
    fn size(&self) -> usize {
        match self {
            Write::Put(k, v) | Write::PutLeased(k, v) => k.len() + v.len(),
            Write::Delete(k) => k.len(),
            Write::Hist(_) => 512,
            Write::Log(v) => v.len() + 64,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LeaseMode {
    None,
    Held(i64),
    Acquire(i64),
}

impl EtcdStore {
    /// Writes `commit`. A deferred one (the end of a phase) is held and written in one
    /// transaction with the next commit (the next phase's start), before any read, or on
    /// release: durable before the next phase starts, as on sled, at one quorum write per
    /// phase instead of two.
    pub(crate) fn commit(&mut self, op: &str, commit: Commit) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        if let Some(detail) = &self.settle_failed {
            // A held end of a phase could not be written: nothing after it may be.
            return Err(EtcdStoreError::Unavailable {
                endpoints: self.config.endpoints.join(","),
                what: "write",
                detail: detail.clone(),
            }
            .into());
        }
        let commit = match self.deferred.take() {
            Some((held_op, held)) if held_op == op => merge(held, commit),
            Some((held_op, held)) => {
                self.write_commit(&held_op, held)?;
                commit
            }
            None => commit,
        };
        if commit.defer_flush {
            self.deferred = Some((op.to_string(), commit));
            return Ok(());
        }
        self.write_commit(op, commit)
    }

    /// Writes a held deferred commit now (see [`EtcdStore::commit`]).
    pub(crate) fn settle(&mut self) -> Result<(), StoreError> {
        let Some((op, held)) = self.deferred.take() else {
            return Ok(());
        };
        let written = self.write_commit(&op, held);
        if let Err(e) = &written {
            self.settle_failed = Some(e.to_string());
        }
        written
    }

    fn write_commit(&mut self, op: &str, commit: Commit) -> Result<(), StoreError> {
        self.check_held(op)?;
        let create = commit.plan.is_some();
        let mut writes = Vec::new();
        if let Some(p) = commit.plan {
            writes.push(Write::Put(self.key("plan", op), p));
        }
        if let Some(o) = &commit.operation {
            writes.push(Write::Put(self.key("op", op), encode(o)));
        }
        if let Some(s) = &commit.secrets {
            if s.is_empty() {
                writes.push(Write::Delete(self.key("secret", op)));
            } else {
                let key = self
                    .state_key
                    .as_ref()
                    .ok_or_else(|| EtcdStoreError::NoKeyFile {
                        operation: op.to_string(),
                    })?;
                writes.push(Write::Put(self.key("secret", op), key.seal(op, &encode(s))));
            }
        }
        for (phase, record) in &commit.records {
            let k = format!("{}ph/{op}/{phase}", self.config.prefix);
            writes.push(Write::Put(k, encode(record)));
        }
        writes.extend(commit.history.into_iter().map(Write::Hist));
        if let Some(v) = &commit.vars {
            writes.push(Write::Put(self.key("vars", op), encode(v)));
        }
        let mut logs: Vec<Write> = log_chunks(&commit.logs)
            .into_iter()
            .map(Write::Log)
            .collect();
        let held = self.held.get(op).map(|h| h.lease_id);
        let mut mode = held.map_or(LeaseMode::None, LeaseMode::Held);
        let mut releasing = false;
        match commit.lease {
            Some(Some(mut lease)) => {
                lease.store_alive = None;
                let value = encode(&lease);
                if held.is_none() {
                    mode = LeaseMode::Acquire(self.grant()?);
                }
                writes.push(Write::PutLeased(self.key("lease", op), value.clone()));
                writes.push(Write::Put(self.key("holder", op), value));
            }
            Some(None) => {
                writes.push(Write::Delete(self.key("holder", op)));
                if held.is_some() {
                    writes.push(Write::Delete(self.key("lease", op)));
                    releasing = true;
                }
            }
            None => {}
        }
        let too_big =
            |w: &[Write]| w.len() > TXN_OPS || w.iter().map(Write::size).sum::<usize>() > TXN_BYTES;
        let mut all: Vec<Write> = writes.into_iter().chain(logs.drain(..)).collect();
        if too_big(&all) {
            let (state, output): (Vec<Write>, Vec<Write>) =
                all.into_iter().partition(|w| !matches!(w, Write::Log(_)));
            let (mut batch, mut bytes) = (Vec::new(), 0);
            for chunk in output {
                if !batch.is_empty() && (batch.len() >= TXN_OPS || bytes + chunk.size() > TXN_BYTES)
                {
                    self.write(op, std::mem::take(&mut batch), mode_for_output(mode), false)?;
                    bytes = 0;
                }
                bytes += chunk.size();
                batch.push(chunk);
            }
            if !batch.is_empty() {
                self.write(op, batch, mode_for_output(mode), false)?;
            }
            all = state;
        }
        let written = self.write(op, all, mode, create);
        match (written, mode) {
            (Ok(()), LeaseMode::Acquire(id)) => self.start_keepalive(op, id),
            (Err(e), LeaseMode::Acquire(id)) => {
                self.revoke(id);
                return Err(e);
            }
            (r, _) => r?,
        }
        if releasing {
            if let Some(h) = self.held.remove(op) {
                h.keepalive.abort();
                self.revoke(h.lease_id);
            }
        }
        Ok(())
    }

    fn grant(&self) -> Result<i64, EtcdStoreError> {
        let ttl = self.config.lease_ttl.as_secs().max(1) as i64;
        let resp = self.call("grant lease", move |mut c| async move {
            c.lease_grant(ttl, None).await
        })?;
        Ok(resp.id())
    }

    fn revoke(&self, id: i64) {
        let _ = self.call("revoke lease", move |mut c| async move {
            c.lease_revoke(id).await
        });
    }

    fn start_keepalive(&mut self, op: &str, id: i64) {
        let lost = Arc::new(AtomicBool::new(false));
        let task = self.handle.spawn(keepalive::keep_alive(
            self.client.clone(),
            id,
            self.config.lease_ttl,
            lost.clone(),
        ));
        self.held.insert(
            op.to_string(),
            Held {
                lease_id: id,
                lost,
                keepalive: task,
            },
        );
    }

    /// The head of `op`: cached from our last write, or read.
    fn head(&mut self, op: &str) -> Result<Head, EtcdStoreError> {
        if let Some(h) = self.heads.get(op) {
            return Ok(*h);
        }
        let k = self.key("head", op);
        let mut resp = self.call("read", move |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        })?;
        let head = head_of(resp.take_kvs().first())?;
        self.heads.insert(op.to_string(), head);
        Ok(head)
    }

    /// Writes `writes` as one transaction (see the module comment), retrying while only the
    /// head moved.
    fn write(
        &mut self,
        op: &str,
        writes: Vec<Write>,
        mode: LeaseMode,
        create: bool,
    ) -> Result<(), StoreError> {
        let mut marks = Vec::new();
        for _ in 0..32 {
            let head = self.head(op)?;
            let mut next = Head {
                writer: random_mark(),
                ..head
            };
            marks.push(next.writer);
            let txn = self.transaction(op, &writes, mode, create, head, &mut next);
            let resp = self.call("write", move |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })?;
            if resp.succeeded() {
                next.mod_revision = resp.header().map_or(0, |h| h.revision());
                self.heads.insert(op.to_string(), next);
                return Ok(());
            }
            let found: Vec<Option<KeyValue>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
                    _ => None,
                })
                .collect();
            let [lease_kv, op_kv, head_kv] = [0, 1, 2].map(|i| found.get(i).cloned().flatten());
            let now = head_of(head_kv.as_ref())?;
            self.heads.insert(op.to_string(), now);
            if marks.contains(&now.writer) {
                // An earlier attempt of this write was applied (its answer was lost).
                return Ok(());
            }
            if let Some(refused) = self.refusal(op, mode, create, lease_kv, op_kv) {
                return Err(refused.into());
            }
        }
        Err(EtcdStoreError::Unavailable {
            endpoints: self.config.endpoints.join(","),
            what: "write",
            detail: "other writers kept changing the operation".into(),
        }
        .into())
    }

    /// The transaction writing `writes` on top of `head` (`next` gets the numbers it used),
    /// with its compares, and reads of what they compared for when it fails.
    fn transaction(
        &self,
        op: &str,
        writes: &[Write],
        mode: LeaseMode,
        create: bool,
        head: Head,
        next: &mut Head,
    ) -> Txn {
        let (lease_key, op_key, head_key) = (
            self.key("lease", op),
            self.key("op", op),
            self.key("head", op),
        );
        let mut ops = Vec::with_capacity(writes.len() + 1);
        for w in writes {
            ops.push(match w {
                Write::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
                Write::PutLeased(k, v) => {
                    let id = match mode {
                        LeaseMode::Held(id) | LeaseMode::Acquire(id) => id,
                        LeaseMode::None => 0,
                    };
                    TxnOp::put(
                        k.as_str(),
                        v.clone(),
                        Some(PutOptions::new().with_lease(id)),
                    )
                }
                Write::Delete(k) => TxnOp::delete(k.as_str(), None),
                Write::Hist(e) => {
                    let entry = HistoryEntry {
                        seq: next.hist,
                        ..e.clone()
                    };
                    next.hist += 1;
                    let k = format!("{}hist/{op}/{:016x}", self.config.prefix, entry.seq);
                    TxnOp::put(k, encode(&entry), None)
                }
                Write::Log(v) => {
                    let k = format!("{}log/{op}/{:016x}", self.config.prefix, next.log);
                    next.log += 1;
                    TxnOp::put(k, v.clone(), None)
                }
            });
        }
        ops.push(TxnOp::put(head_key.as_str(), encode(&*next), None));
        let mut when = vec![if head.mod_revision == 0 {
            Compare::version(head_key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(head_key.as_str(), CompareOp::Equal, head.mod_revision)
        }];
        match mode {
            LeaseMode::Held(id) => {
                when.push(Compare::lease(lease_key.as_str(), CompareOp::Equal, id))
            }
            LeaseMode::Acquire(_) => {
                when.push(Compare::version(lease_key.as_str(), CompareOp::Equal, 0))
            }
            LeaseMode::None => {}
        }
        if create {
            when.push(Compare::version(op_key.as_str(), CompareOp::Equal, 0));
        }
        let why = [&lease_key, &op_key, &head_key].map(|k| TxnOp::get(k.as_str(), None));
        Txn::new().when(when).and_then(ops).or_else(why)
    }

    /// Why a failed transaction must not be made again, from what its compares found: the
    /// lease lost or held by another executor, or the operation there already. `None`: only
    /// the head moved.
    fn refusal(
        &self,
        op: &str,
        mode: LeaseMode,
        create: bool,
        lease_kv: Option<KeyValue>,
        op_kv: Option<KeyValue>,
    ) -> Option<EtcdStoreError> {
        match (mode, lease_kv) {
            (LeaseMode::Held(id), kv) if kv.as_ref().map(|kv| kv.lease()) != Some(id) => {
                if let Some(h) = self.held.get(op) {
                    h.lost.store(true, Ordering::SeqCst);
                }
                return Some(EtcdStoreError::LeaseLost {
                    operation: op.to_string(),
                    ttl_secs: self.config.lease_ttl.as_secs(),
                });
            }
            (LeaseMode::Acquire(_), Some(kv)) => {
                let holder = decode::<crate::store::Lease>(kv.key(), kv.value())
                    .map(|l| l.describe())
                    .unwrap_or_else(|_| "another executor".into());
                return Some(EtcdStoreError::LeaseHeld {
                    operation: op.to_string(),
                    holder,
                });
            }
            _ => {}
        }
        (create && op_kv.is_some()).then(|| EtcdStoreError::OperationExists {
            operation: op.to_string(),
        })
    }
}

/// `earlier` and `later` as one commit: records by phase (the later wins: etcd refuses a key
/// twice in one transaction), history and logs in order, other values the later's if set.
fn merge(earlier: Commit, later: Commit) -> Commit {
    let mut records = earlier.records;
    for (phase, record) in later.records {
        records.retain(|(p, _)| *p != phase);
        records.push((phase, record));
    }
    let mut history = earlier.history;
    history.extend(later.history);
    let mut logs = earlier.logs;
    logs.extend(later.logs);
    Commit {
        operation: later.operation.or(earlier.operation),
        plan: later.plan.or(earlier.plan),
        secrets: later.secrets.or(earlier.secrets),
        records,
        history,
        vars: later.vars.or(earlier.vars),
        logs,
        lease: later.lease.or(earlier.lease),
        defer_flush: later.defer_flush,
    }
}

fn random_mark() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    u64::from_le_bytes(bytes).max(1)
}

/// Output written before the state change: under the executor's lease if it has one (a
/// lease being taken is not ours yet, so that output goes without the compare).
fn mode_for_output(mode: LeaseMode) -> LeaseMode {
    match mode {
        LeaseMode::Held(id) => LeaseMode::Held(id),
        _ => LeaseMode::None,
    }
}

fn head_of(kv: Option<&KeyValue>) -> Result<Head, EtcdStoreError> {
    match kv {
        Some(kv) => {
            let mut head: Head = decode(kv.key(), kv.value())?;
            head.mod_revision = kv.mod_revision();
            Ok(head)
        }
        None => Ok(Head::default()),
    }
}

/// Log lines as stored chunks: consecutive lines of one phase, at most [`LOG_CHUNK_LINES`]
/// lines and about [`CHUNK_BYTES`] each.
fn log_chunks(lines: &[LogLine]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for same_phase in lines.chunk_by(|a, b| a.phase == b.phase) {
        let mut start = 0;
        while start < same_phase.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < same_phase.len()
                && end - start < LOG_CHUNK_LINES
                && (end == start || bytes + same_phase[end].text.len() <= CHUNK_BYTES)
            {
                bytes += same_phase[end].text.len() + 32;
                end += 1;
            }
            let part = &same_phase[start..end];
            out.push(encode(&StoredLog::Chunk {
                phase: part[0].phase.clone(),
                lines: part
                    .iter()
                    .map(|l| (l.time, l.stream, l.text.clone()))
                    .collect(),
            }));
            start = end;
        }
    }
    out
}
