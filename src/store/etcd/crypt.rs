//! Secret parameter values at rest in etcd: AES-256-GCM (ring) with a key kept in a local file
//! (`--state-key-file`), never in etcd, so etcd's operators and its backups cannot read them.
//!
//! 1. [`StateKey::load_or_create`] reads the 32-byte key, or creates the file (mode 0600,
//!    never replacing one) with a fresh random key on first use.
//! 2. [`StateKey::seal`] encrypts with a random nonce, bound to the operation ID (the AAD), so
//!    a value copied to another operation's key does not decrypt.
//! 3. [`StateKey::open`] reverses it; a wrong key is an error, never garbage.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::error::EtcdStoreError;

/// What a sealed value starts with (format version of the envelope).
const MAGIC: &[u8] = b"medic-aead-1:";
const KEY_LEN: usize = 32;

pub(crate) struct StateKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl StateKey {
    pub(crate) fn load_or_create(path: &Path) -> Result<StateKey, EtcdStoreError> {
        let err = |detail: String| EtcdStoreError::KeyFile {
            path: path.to_path_buf(),
            detail,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path).map_err(err)?,
            Err(e) => return Err(err(e.to_string())),
        };
        if bytes.len() != KEY_LEN {
            return Err(err(format!(
                "it holds {} bytes, not a {KEY_LEN}-byte key; name the key file the secrets were stored with, or a path that does not exist yet to create one",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| err("unusable key".into()))?;
        Ok(StateKey {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn seal(&self, operation: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(operation.as_bytes()),
                &mut data,
            )
            .expect("a value this size seals");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        out
    }

    pub(crate) fn open(&self, operation: &str, sealed: &[u8]) -> Result<Vec<u8>, EtcdStoreError> {
        let wrong = || EtcdStoreError::Decrypt {
            operation: operation.to_string(),
            path: self.path.clone(),
        };
        let rest = sealed.strip_prefix(MAGIC).ok_or_else(wrong)?;
        if rest.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(operation.as_bytes()), &mut data)
            .map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }
}

/// Creates the key file (0600, failing rather than replacing one) with a random key.
fn create(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = vec![0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "no random source to make a key".to_string())?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("create it: {e}"))?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("write it: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_wrong_key_or_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = StateKey::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = key.seal("op-1", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("op-1", &sealed).unwrap(), b"hunter2");
        assert!(key.open("op-2", &sealed).is_err());
        let again = StateKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("op-1", &sealed).unwrap(), b"hunter2");
        let other = StateKey::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(other.open("op-1", &sealed).is_err());
    }
}
