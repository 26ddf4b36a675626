//! The bundle: a gzip tarball written to `FILE.partial` and renamed when complete, every file
//! under one top directory, scrubbed, capped (keeping the tail), hashed and listed in
//! `MANIFEST.json`, written last. [`verify`] re-checks a bundle against its manifest.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::redact::Scrubber;
use super::ReportError;

pub(crate) const MANIFEST: &str = "MANIFEST.json";

/// What a collector brought back, before scrubbing.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) source: &'static str,
    pub(crate) node: Option<String>,
    pub(crate) command: String,
    /// Relative to the bundle's top directory; `None`: nothing to write (unreachable node).
    pub(crate) path: Option<String>,
    /// The output's tail (collectors keep at most the cap and a margin).
    pub(crate) data: Vec<u8>,
    /// The collector already dropped the front of the output.
    pub(crate) truncated: bool,
    pub(crate) exit_code: Option<i32>,
    pub(crate) timed_out: bool,
    pub(crate) unreachable: bool,
    pub(crate) error: Option<String>,
    pub(crate) stderr_tail: Option<String>,
    pub(crate) duration_ms: u64,
}

/// One line of the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
    pub(crate) command: String,
    pub(crate) path: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) bytes: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) truncated: bool,
    pub(crate) duration_ms: u64,
    #[serde(default)]
    pub(crate) timed_out: bool,
    #[serde(default)]
    pub(crate) unreachable: bool,
    pub(crate) error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stderr_tail: Option<String>,
}

/// `MANIFEST.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) medic_version: String,
    pub(crate) command_line: String,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) operation: Option<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) items: Vec<Item>,
}

/// The tarball being written.
pub(crate) struct Bundle {
    final_path: PathBuf,
    partial: PathBuf,
    top: String,
    tar: tar::Builder<flate2::write::GzEncoder<BufWriter<File>>>,
    scrubber: Scrubber,
    max_file: u64,
    max_total: u64,
    pub(crate) written: u64,
    /// A file was cut to fit the total budget: nothing more goes in.
    spent: bool,
    pub(crate) items: Vec<Item>,
    pub(crate) notes: Vec<String>,
}

/// The last `max` bytes of `data`, starting after a line break when one is near the front.
pub(crate) fn keep_tail(data: &[u8], max: usize) -> (&[u8], bool) {
    if data.len() <= max {
        return (data, false);
    }
    let tail = &data[data.len() - max..];
    match tail.iter().position(|b| *b == b'\n') {
        Some(i) if i < 4096 && i + 1 < tail.len() => (&tail[i + 1..], true),
        _ => (tail, true),
    }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Bundle {
    pub(crate) fn create(
        path: &Path,
        top: String,
        scrubber: Scrubber,
        max_file: u64,
        max_total: u64,
    ) -> Result<Bundle, ReportError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|source| ReportError::Write {
            path: partial.clone(),
            source,
        })?;
        let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        Ok(Bundle {
            final_path: path.to_path_buf(),
            partial,
            top,
            tar: tar::Builder::new(gz),
            scrubber,
            max_file,
            max_total,
            written: 0,
            spent: false,
            items: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// Whether the total budget (`--max-size`) is spent.
    pub(crate) fn full(&self) -> bool {
        self.spent || self.written >= self.max_total
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        self.scrubber.scrub(text)
    }

    fn append(&mut self, path: &str, data: &[u8]) -> Result<(), ReportError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(crate::store::now_ms() / 1000);
        header.set_entry_type(tar::EntryType::Regular);
        let full = format!("{}/{path}", self.top);
        self.tar
            .append_data(&mut header, &full, data)
            .map_err(|source| ReportError::Write {
                path: self.partial.clone(),
                source,
            })
    }

    /// Scrubs, caps and writes one collected item, and lists it.
    pub(crate) fn add(&mut self, c: Collected) -> Result<(), ReportError> {
        let mut item = Item {
            source: c.source.to_string(),
            node: c.node,
            command: self.scrubber.scrub(&c.command),
            path: None,
            exit_code: c.exit_code,
            bytes: 0,
            sha256: None,
            truncated: c.truncated,
            duration_ms: c.duration_ms,
            timed_out: c.timed_out,
            unreachable: c.unreachable,
            error: c.error.map(|e| self.scrubber.scrub(&e)),
            stderr_tail: c.stderr_tail.map(|e| self.scrubber.scrub(&e)),
        };
        // A command that failed without output leaves no (empty) file: the manifest says why.
        let nothing = c.data.is_empty() && item.error.is_some();
        if let Some(path) = c.path.filter(|_| !nothing) {
            if self.full() {
                item.error = Some("not written: the total budget (--max-size) was spent".into());
            } else {
                let scrubbed = self.scrubber.scrub_bytes(&c.data);
                let room = (self.max_total - self.written).min(self.max_file) as usize;
                let (kept, cut) = keep_tail(&scrubbed, room);
                self.append(&path, kept)?;
                self.written += kept.len() as u64;
                item.bytes = kept.len() as u64;
                item.sha256 = Some(sha256_hex(kept));
                item.truncated |= cut;
                self.spent |= cut && (room as u64) < self.max_file;
                item.path = Some(path);
            }
        }
        self.items.push(item);
        Ok(())
    }

    /// Writes the manifest, finishes the archive and renames it into place.
    pub(crate) fn finish(
        mut self,
        mut manifest: Manifest,
    ) -> Result<(PathBuf, Manifest), ReportError> {
        manifest.items = std::mem::take(&mut self.items);
        manifest.notes.append(&mut self.notes);
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        self.append(MANIFEST, &json)?;
        let write_err = |source| ReportError::Write {
            path: self.partial.clone(),
            source,
        };
        let gz = self.tar.into_inner().map_err(write_err)?;
        let buf = gz.finish().map_err(write_err)?;
        let file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&self.partial, &self.final_path).map_err(write_err)?;
        Ok((self.final_path, manifest))
    }

    /// Removes the partial file (collection failed).
    pub(crate) fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// A file whose content does not match the manifest.
#[derive(Debug, Serialize)]
pub(crate) struct Mismatch {
    pub(crate) path: String,
    pub(crate) problem: String,
}

/// Re-checks every file of the bundle at `path` against its manifest's sha256.
pub(crate) fn verify(path: &Path) -> Result<(usize, Vec<Mismatch>), ReportError> {
    let read_err = |source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut hashes = std::collections::BTreeMap::new();
    let mut manifest = None;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let rel = name
            .split_once('/')
            .map_or(name.clone(), |(_, r)| r.to_string());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(read_err)?;
        if rel == MANIFEST {
            manifest = Some(serde_json::from_slice::<Manifest>(&data).map_err(|e| {
                ReportError::Manifest {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?);
        } else {
            hashes.insert(rel, sha256_hex(&data));
        }
    }
    let manifest = manifest.ok_or_else(|| ReportError::Manifest {
        path: path.to_path_buf(),
        reason: format!("no {MANIFEST} in the bundle"),
    })?;
    let mut problems = Vec::new();
    let mut checked = 0;
    for item in &manifest.items {
        let (Some(p), Some(want)) = (&item.path, &item.sha256) else {
            continue;
        };
        checked += 1;
        match hashes.remove(p) {
            Some(got) if &got == want => {}
            Some(got) => problems.push(Mismatch {
                path: p.clone(),
                problem: format!("sha256 {got}, the manifest says {want}"),
            }),
            None => problems.push(Mismatch {
                path: p.clone(),
                problem: "listed in the manifest but missing".into(),
            }),
        }
    }
    for extra in hashes.into_keys() {
        problems.push(Mismatch {
            path: extra,
            problem: "in the bundle but not in the manifest".into(),
        });
    }
    Ok((checked, problems))
}

#[cfg(test)]
mod tests {
    use super::keep_tail;

    #[test]
    fn the_tail_is_kept_from_a_line_start() {
        let data = b"first line\nsecond line\nthird\n";
        let (kept, cut) = keep_tail(data, 15);
        assert!(cut);
        assert_eq!(kept, b"third\n");
        assert_eq!(keep_tail(data, 100), (&data[..], false));
    }
}
