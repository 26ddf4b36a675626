//! What can go wrong with the etcd state store ([`EtcdStoreError`]), each failure with the exit
//! code it ends the process with. `StoreError::Etcd` carries it through the rest of medic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EtcdStoreError {
    #[error("--state {url}: {why}; write it as etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")]
    BadUrl { url: String, why: String },
    #[error("connect to the etcd state store at {endpoints}: {detail}; check that etcd runs there and that --state-ca/--state-cert/--state-key match it (nothing was changed)")]
    Connect { endpoints: String, detail: String },
    #[error("read TLS file {path} for the etcd state store: {source}")]
    ReadTls {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("etcd state store at {endpoints} did not answer ({what}): {detail}; the last change was not recorded and nothing more was started. When etcd has its quorum back, `medic plan` shows where the operation stands and `medic plan resume` continues")]
    Unavailable {
        endpoints: String,
        what: &'static str,
        detail: String,
    },
    #[error("the state store was lost: this executor's etcd lease on operation {operation} expired or was taken over (etcd unreachable or partitioned for longer than the lease TTL of {ttl_secs}s); it starts no more phases and writes nothing more. When etcd is reachable again, `medic plan` shows where the operation stands and `medic plan resume` continues")]
    LeaseLost { operation: String, ttl_secs: u64 },
    #[error("operation {operation} is being executed by {holder}; wait for it to finish, or stop it with `medic plan stop`")]
    LeaseHeld { operation: String, holder: String },
    #[error(
        "operation {operation} already exists in the etcd state store; nothing was overwritten"
    )]
    OperationExists { operation: String },
    #[error("operation {operation} has secret values, which the etcd state store keeps encrypted with a key that is not in etcd; pass --state-key-file FILE (or set MEDIC_STATE_KEY_FILE) naming the key file they were stored with")]
    NoKeyFile { operation: String },
    #[error("state key file {path}: {detail}")]
    KeyFile { path: PathBuf, detail: String },
    #[error("decrypt the secret values of operation {operation}: the key file {path} is not the one they were stored with; pass the right --state-key-file")]
    Decrypt { operation: String, path: PathBuf },
    #[error("copy operation {operation}: {detail}; the target may hold a partial copy that no command lists (the operation record is written last)")]
    Verify { operation: String, detail: String },
    #[error("etcd state store holds a record it cannot read ({key}): {detail}")]
    Decode { key: String, detail: String },
}

impl EtcdStoreError {
    /// 3 refused for safety (another executor, an existing operation), 2 bad input (URL, TLS
    /// or key files), 1 the store failed (unreachable, lost, undecodable).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            EtcdStoreError::LeaseHeld { .. } | EtcdStoreError::OperationExists { .. } => 3,
            EtcdStoreError::BadUrl { .. }
            | EtcdStoreError::ReadTls { .. }
            | EtcdStoreError::NoKeyFile { .. }
            | EtcdStoreError::KeyFile { .. }
            | EtcdStoreError::Decrypt { .. } => 2,
            EtcdStoreError::Connect { .. }
            | EtcdStoreError::Unavailable { .. }
            | EtcdStoreError::LeaseLost { .. }
            | EtcdStoreError::Verify { .. }
            | EtcdStoreError::Decode { .. } => 1,
        }
    }
}
