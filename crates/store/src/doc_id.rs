//! `DocId`: the validated name of a document.

use std::fmt;
use std::str::FromStr;

/// Longest accepted document id, in bytes (= chars: the alphabet is ASCII).
pub const MAX_DOC_ID_LEN: usize = 128;

/// A validated document id: 1-128 chars of `A-Z a-z 0-9 . _ -`.
///
/// The alphabet is what makes ids safe everywhere they travel: in URL paths
/// without escaping, in file names of exports, and inside sled keys, where the
/// byte `0x00` (never part of an id) terminates the id (see [`crate::records`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

impl DocId {
    /// Validates `id`; the error says what is allowed.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidDocId> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= MAX_DOC_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(DocId(id))
        } else {
            Err(InvalidDocId { id })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DocId {
    type Err = InvalidDocId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DocId::new(s)
    }
}

impl TryFrom<String> for DocId {
    type Error = InvalidDocId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        DocId::new(s)
    }
}

impl TryFrom<&str> for DocId {
    type Error = InvalidDocId;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        DocId::new(s)
    }
}

impl AsRef<str> for DocId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<DocId> for String {
    fn from(id: DocId) -> String {
        id.0
    }
}

/// Why a document id was rejected (message is shown to users verbatim).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document id '{id}' is invalid: only A-Z a-z 0-9 . _ - allowed, 1-128 chars")]
pub struct InvalidDocId {
    /// The rejected input.
    pub id: String,
}
