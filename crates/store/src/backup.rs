//! Online backup and restore: every document's full state in one archive.
//!
//! # Archive format
//!
//! A POSIX tar archive (written and read with the `tar` crate, so any `tar`
//! tool can list and unpack it):
//!
//! - `docs/<id>.yupdate`, one per document, in id order: the document's
//!   full state as one yrs v1 update (`Store::export`), consistent for that
//!   document at the moment it was read;
//! - `BACKUP-MANIFEST.json`, the **last** entry: `{"format":
//!   "tandem-backup", "version": 1, "taken_ms", "documents": [{"id",
//!   "bytes", "crc32"}...]}`. Written after every document, so an archive
//!   cut short (a dropped connection, a full disk) has no manifest and is
//!   refused by restore; each document's size and CRC-32 are checked
//!   against it.
//!
//! A backup of a running store does not stop writers: each document is
//! exported on its own (pages of [`Store::list_page`], one document in
//! memory at a time), so the archive holds every update acknowledged before
//! the backup began, and each document as it was at some moment during the
//! backup. A document that cannot be read is left out and listed in the
//! manifest's `skipped`, never silently dropped.

use std::io::{Read, Write};
use std::path::Path;

use crate::listing::MAX_PAGE;
use crate::{DocId, Store, StoreError, records};

/// Name of the manifest entry, the archive's last.
pub const BACKUP_MANIFEST: &str = "BACKUP-MANIFEST.json";

/// `format` field of the manifest.
const FORMAT: &str = "tandem-backup";

/// The archive's manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupManifest {
    /// Always `tandem-backup`.
    pub format: String,
    /// Archive format version (1).
    pub version: u32,
    /// When the backup started, ms since the Unix epoch.
    pub taken_ms: u64,
    /// Every document in the archive, in id order.
    pub documents: Vec<BackupEntry>,
    /// Documents that could not be read, with the reason.
    #[serde(default)]
    pub skipped: Vec<(String, String)>,
}

/// One document of an archive.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupEntry {
    /// Document id.
    pub id: String,
    /// Bytes of its update.
    pub bytes: u64,
    /// CRC-32 of its update.
    pub crc32: u32,
}

fn entry_path(doc: &DocId) -> String {
    format!("docs/{doc}.yupdate")
}

fn append(
    archive: &mut tar::Builder<impl Write>,
    path: &str,
    data: &[u8],
    mtime_s: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime_s);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, path, data)
}

/// Writes a backup of `store` to `out` (see the module docs); returns the
/// manifest. Blocking; reads one document at a time.
pub fn write_backup(store: &Store, out: impl Write) -> Result<BackupManifest, StoreError> {
    let taken_ms = crate::store::now_ms();
    let mut archive = tar::Builder::new(out);
    let mut manifest = BackupManifest {
        format: FORMAT.into(),
        version: 1,
        taken_ms,
        documents: Vec::new(),
        skipped: Vec::new(),
    };
    let mut after = None;
    loop {
        let page = store.list_page("", after.as_ref(), MAX_PAGE)?;
        for info in &page.docs {
            match store.export(&info.id) {
                Ok(update) => {
                    append(
                        &mut archive,
                        &entry_path(&info.id),
                        &update,
                        taken_ms / 1000,
                    )?;
                    manifest.documents.push(BackupEntry {
                        id: info.id.to_string(),
                        bytes: update.len() as u64,
                        crc32: records::checksum(&[&update]),
                    });
                }
                Err(e) => {
                    tracing::warn!(doc = %info.id, error = %e, "backup: document skipped");
                    manifest.skipped.push((info.id.to_string(), e.to_string()));
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| StoreError::Damaged(format!("encoding the backup manifest: {e}")))?;
    append(&mut archive, BACKUP_MANIFEST, &json, taken_ms / 1000)?;
    archive.into_inner()?.flush()?;
    Ok(manifest)
}

/// Why an archive cannot be restored.
fn bad_archive(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged(format!(
        "backup archive {} cannot be restored: {why}",
        path.display()
    ))
}

/// Reads the manifest of the archive at `path` (its last entry).
pub fn read_backup_manifest(path: &Path) -> Result<BackupManifest, StoreError> {
    let cut_short = |e: std::io::Error| {
        bad_archive(
            path,
            format!("it is damaged or incomplete ({e}): no readable {BACKUP_MANIFEST}"),
        )
    };
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    let mut manifest = None;
    for entry in archive.entries().map_err(cut_short)? {
        let mut entry = entry.map_err(cut_short)?;
        if entry.path().map_err(cut_short)?.to_str() == Some(BACKUP_MANIFEST) {
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(cut_short)?;
            let parsed: BackupManifest = serde_json::from_slice(&json)
                .map_err(|e| bad_archive(path, format!("unreadable manifest: {e}")))?;
            if parsed.format != FORMAT || parsed.version != 1 {
                return Err(bad_archive(path, "not a tandem backup (version 1)"));
            }
            manifest = Some(parsed);
        }
    }
    manifest.ok_or_else(|| {
        bad_archive(
            path,
            format!("no {BACKUP_MANIFEST} (the archive is incomplete: the backup was cut short)"),
        )
    })
}

/// Loads every document of the archive at `path` into `store` (each
/// checked against the manifest's size and CRC-32 first, then imported
/// durably). Returns the manifest.
pub fn restore_backup(store: &Store, path: &Path) -> Result<BackupManifest, StoreError> {
    let manifest = read_backup_manifest(path)?;
    let mut expected: std::collections::HashMap<&str, &BackupEntry> = manifest
        .documents
        .iter()
        .map(|e| (e.id.as_str(), e))
        .collect();
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("docs/")
            .and_then(|n| n.strip_suffix(".yupdate"))
        else {
            continue;
        };
        let doc = DocId::new(id).map_err(|e| bad_archive(path, e))?;
        let listed = expected
            .remove(id)
            .ok_or_else(|| bad_archive(path, format!("{name} is not in the manifest")))?;
        let mut update = Vec::with_capacity(listed.bytes.min(1 << 30) as usize);
        entry.read_to_end(&mut update)?;
        if update.len() as u64 != listed.bytes || records::checksum(&[&update]) != listed.crc32 {
            return Err(bad_archive(
                path,
                format!("{name} does not match its checksum"),
            ));
        }
        store.import(&doc, &update)?;
    }
    if let Some(missing) = expected.keys().next() {
        return Err(bad_archive(
            path,
            format!("document '{missing}' is in the manifest but not in the archive"),
        ));
    }
    store.flush()?;
    Ok(manifest)
}
