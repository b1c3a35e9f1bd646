//! The revocation denylist: tokens refused before their `exp`, by `jti`,
//! by `sub` or by document. Persisted in the data directory
//! (`revocations.json`, written to a temporary file, fsynced, renamed over
//! the old one, directory fsynced), so it survives a restart and a crash
//! leaves either the old or the new list.
//!
//! Matching: a `jti` entry refuses that one token; a `sub` entry refuses
//! every token of that subject issued (`iat`) at or before the revocation,
//! and a `doc` entry every such token for that document (a token without
//! `iat` counts as issued before). Tokens minted afterwards work again, so
//! "revoke sub" means "sign out everywhere".
//!
//! Live connections: [`Revocations::subscribe`] hands out every new entry
//! as it is stored; whoever owns the live sockets closes the matching ones
//! with 4403 ([`Revocation::matches`] says which).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tandem_store::DocId;
use tokio::sync::broadcast;

use crate::auth::claims::{Claims, unix_now};

/// File name of the denylist inside the data directory.
pub const FILE_NAME: &str = "revocations.json";

/// Most entries kept; revoking beyond it fails (the whole list is
/// rewritten on every revocation, so it must stay small).
pub const MAX_ENTRIES: usize = 10_000;

/// Longest `jti` or `sub` accepted in a revocation.
pub const MAX_NAME_BYTES: usize = 256;

/// What a revocation names (the `POST /api/admin/revoke` body is one of
/// `{"jti": ...}`, `{"sub": ...}`, `{"doc": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// One token, by its `jti`.
    Jti(String),
    /// Every token of this subject issued before the revocation.
    Sub(String),
    /// Every token issued before the revocation, for this document.
    Doc(String),
}

impl Target {
    fn check(&self) -> Result<(), RevocationError> {
        let (what, name) = match self {
            Target::Jti(n) => ("jti", n),
            Target::Sub(n) => ("sub", n),
            Target::Doc(id) => {
                return DocId::new(id.clone())
                    .map(|_| ())
                    .map_err(|e| RevocationError::Invalid(e.to_string()));
            }
        };
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(RevocationError::Invalid(format!(
                "{what} must be 1-{MAX_NAME_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// One denylist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What is revoked.
    #[serde(flatten)]
    pub target: Target,
    /// When (unix seconds).
    pub at: u64,
}

impl Revocation {
    /// Whether this entry refuses a token with `claims` used for `doc`
    /// (`None`: a request about no single document).
    pub fn matches(&self, claims: &Claims, doc: Option<&DocId>) -> bool {
        let issued_before = claims.iat.unwrap_or(0) <= self.at;
        match &self.target {
            Target::Jti(jti) => claims.jti.as_deref() == Some(jti.as_str()),
            Target::Sub(sub) => *sub == claims.sub && issued_before,
            Target::Doc(id) => doc.is_some_and(|d| d.as_str() == id) && issued_before,
        }
    }
}

/// Why the denylist could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Reading, writing or syncing the file failed.
    #[error("revocation list {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a revocation list.
    #[error("revocation list {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// [`MAX_ENTRIES`] reached.
    #[error("revocation list full ({MAX_ENTRIES} entries)")]
    Full,
    /// An empty or over-long name, or an invalid document id.
    #[error("nothing to revoke: {0}")]
    Invalid(String),
}

/// The denylist in memory, indexed for per-request checks.
#[derive(Debug, Default)]
struct Index {
    /// Entries in the order they were made (what the file holds).
    entries: Vec<Revocation>,
    jti: HashSet<String>,
    /// Latest revocation time per subject.
    sub: HashMap<String, u64>,
    /// Latest revocation time per document.
    doc: HashMap<String, u64>,
}

impl Index {
    fn insert(&mut self, r: Revocation) {
        match &r.target {
            Target::Jti(j) => {
                self.jti.insert(j.clone());
            }
            Target::Sub(s) => {
                let at = self.sub.entry(s.clone()).or_default();
                *at = (*at).max(r.at);
            }
            Target::Doc(d) => {
                let at = self.doc.entry(d.clone()).or_default();
                *at = (*at).max(r.at);
            }
        }
        self.entries.push(r);
    }

    fn refuses(&self, claims: &Claims, doc: Option<&DocId>) -> bool {
        let iat = claims.iat.unwrap_or(0);
        claims.jti.as_ref().is_some_and(|j| self.jti.contains(j))
            || self.sub.get(&claims.sub).is_some_and(|&at| iat <= at)
            || doc
                .and_then(|d| self.doc.get(d.as_str()))
                .is_some_and(|&at| iat <= at)
    }
}

/// The on-disk form.
#[derive(Serialize, Deserialize)]
struct ListFile {
    /// Format version (1).
    version: u32,
    revoked: Vec<Revocation>,
}

/// The persisted denylist, shared by every request.
#[derive(Debug)]
pub struct Revocations {
    /// `revocations.json` in the data directory.
    path: PathBuf,
    /// Held only for a lookup or while an entry is written (never across `.await`).
    index: Mutex<Index>,
    /// New entries, for closing live connections that match.
    live: broadcast::Sender<Revocation>,
}

impl Revocations {
    /// Loads the denylist of `data_dir` (none yet: empty). Blocking.
    pub fn open(data_dir: &Path) -> Result<Revocations, RevocationError> {
        let path = data_dir.join(FILE_NAME);
        let mut index = Index::default();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let list: ListFile =
                    serde_json::from_slice(&bytes).map_err(|e| RevocationError::Damaged {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                for r in list.revoked {
                    index.insert(r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RevocationError::Io { path, source }),
        }
        let (live, _) = broadcast::channel(64);
        Ok(Revocations {
            path,
            index: Mutex::new(index),
            live,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a token with `claims` is refused for `doc`.
    pub fn refuses(&self, claims: &Claims, doc: Option<&DocId>) -> bool {
        self.lock().refuses(claims, doc)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Revokes `target` now: durable in the file before it returns, then
    /// announced to [`Revocations::subscribe`]rs. Blocking (file I/O).
    pub fn revoke(&self, target: Target) -> Result<Revocation, RevocationError> {
        target.check()?;
        let entry = Revocation {
            target,
            at: unix_now(),
        };
        let mut index = self.lock();
        if index.entries.len() >= MAX_ENTRIES {
            return Err(RevocationError::Full);
        }
        let mut revoked = index.entries.clone();
        revoked.push(entry.clone());
        write_atomically(
            &self.path,
            &ListFile {
                version: 1,
                revoked,
            },
        )?;
        index.insert(entry.clone());
        drop(index);
        let _ = self.live.send(entry.clone());
        Ok(entry)
    }

    /// Every revocation from now on, as it is made: the hook that closes
    /// live connections (see the module docs).
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.live.subscribe()
    }
}

/// Write-temp + fsync + rename + fsync(dir): a crash leaves the old or the new file.
fn write_atomically(path: &Path, list: &ListFile) -> Result<(), RevocationError> {
    let io = |source| RevocationError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(list).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Mode;
    use crate::auth::claims::Scope;

    fn claims(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Claims {
        Claims {
            sub: sub.into(),
            docs: Scope::everything(),
            mode: Mode::Write,
            exp: unix_now() + 3600,
            nbf: None,
            iat,
            jti: jti.map(str::to_owned),
        }
    }

    fn doc(id: &str) -> DocId {
        DocId::new(id.to_owned()).expect("id")
    }

    #[test]
    fn revocations_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let list = Revocations::open(dir.path()).expect("open");
        list.revoke(Target::Jti("t1".into())).expect("revoke");
        list.revoke(Target::Sub("bob".into())).expect("revoke");
        drop(list);
        let list = Revocations::open(dir.path()).expect("reopen");
        assert_eq!(list.len(), 2);
        assert!(list.refuses(&claims("ana", Some("t1"), None), None));
        assert!(list.refuses(&claims("bob", None, Some(1)), None));
        assert!(!list.refuses(&claims("ana", Some("t2"), None), None));
    }

    #[test]
    fn sub_and_doc_revocations_spare_tokens_issued_later() {
        let dir = tempfile::tempdir().expect("dir");
        let list = Revocations::open(dir.path()).expect("open");
        list.revoke(Target::Doc("plan".into())).expect("revoke");
        let later = Some(unix_now() + 10);
        assert!(list.refuses(&claims("ana", None, None), Some(&doc("plan"))));
        assert!(!list.refuses(&claims("ana", None, None), Some(&doc("notes"))));
        assert!(!list.refuses(&claims("ana", None, later), Some(&doc("plan"))));
    }

    #[test]
    fn subscribers_hear_each_new_revocation() {
        let dir = tempfile::tempdir().expect("dir");
        let list = Revocations::open(dir.path()).expect("open");
        let mut rx = list.subscribe();
        let made = list.revoke(Target::Sub("eve".into())).expect("revoke");
        assert_eq!(rx.try_recv().expect("announced"), made);
        assert!(made.matches(&claims("eve", None, None), None));
    }

    #[test]
    fn empty_or_oversized_names_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let list = Revocations::open(dir.path()).expect("open");
        for target in [
            Target::Jti(String::new()),
            Target::Sub("x".repeat(MAX_NAME_BYTES + 1)),
            Target::Doc("bad/id".into()),
        ] {
            assert!(matches!(
                list.revoke(target),
                Err(RevocationError::Invalid(_))
            ));
        }
        assert!(list.is_empty());
    }

    #[test]
    fn a_damaged_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").expect("write");
        assert!(matches!(
            Revocations::open(dir.path()),
            Err(RevocationError::Damaged { .. })
        ));
    }
}
