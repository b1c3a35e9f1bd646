//! What can be sent to a room: a joining connection ([`PeerLink`]), an HTTP
//! [`Edit`], or the order to shut down (`Control`). Peer traffic itself
//! flows over each link's own channels.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::access::Principal;
use crate::close::CloseCode;
use crate::inspect::Encoding;
use crate::link::PeerLink;
use crate::link::TEXT_ROOT;

/// A change made without a WebSocket (the HTTP API). It enters the room as
/// an inbound change from a server-side sender and takes exactly the path a
/// peer's update takes: inspect → authorize → apply → store → durable → fan
/// out to every peer → reply.
#[derive(Debug)]
pub enum Edit {
    /// Merge an encoded Yjs update.
    Update {
        /// The update.
        bytes: Bytes,
        /// Its encoding (`?format=v2` asks for v2).
        encoding: Encoding,
    },
    /// Make the root text `content` this string (a minimal character diff).
    ReplaceText(String),
}

/// Why an [`Edit`] was not applied (nothing of it was stored).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The write path refused it (bad update, a cap, quota, non-text root).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The caller may only read this document.
    #[error("permission denied: read-only")]
    ReadOnly,
    /// The room failed (the store, or its document work); the change was
    /// not acknowledged. Shared: one failure answers every edit of a batch.
    #[error(transparent)]
    Failed(std::sync::Arc<RoomError>),
    /// The room could not be opened (shutdown, capacity, load failure).
    #[error("document unavailable: {0}")]
    Unavailable(CloseCode),
}

/// An edit, who makes it, and where to report its outcome.
pub(crate) struct EditRequest {
    /// The change to apply.
    pub edit: Edit,
    /// Who makes it (already checked at the edge; the room applies the same
    /// read-only rule as for peers).
    pub principal: Principal,
    /// Answered once the edit is durable (or refused), so the HTTP response
    /// makes the same promise as a broadcast.
    pub reply: oneshot::Sender<Result<(), EditError>>,
}

/// Why a change was refused; each maps to a close code and an HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Not an update, bytes left over, too deep, or yrs rejected it.
    #[error("invalid update: {0}")]
    Malformed(String),
    /// Over a pending-content cap.
    #[error("{0}")]
    Pending(String),
    /// It would grow the document past `--max-doc-bytes`.
    #[error("the document would grow to {size} bytes; at most {max} allowed")]
    DocTooLarge {
        /// The encoded size it would reach.
        size: usize,
        /// `--max-doc-bytes`.
        max: usize,
    },
    /// It would grow the document past `--max-doc-items` item structs.
    #[error("the document would hold {items} items; at most {max} allowed")]
    TooManyItems {
        /// The items it would hold.
        items: usize,
        /// `--max-doc-items`.
        max: usize,
    },
    /// `PUT .../text` on a document whose root `content` is not text.
    #[error("the document's root '{TEXT_ROOT}' is a {0}, not text")]
    NotText(&'static str),
}

impl Refusal {
    /// The close code a WebSocket sender gets.
    pub(crate) fn close_code(&self) -> CloseCode {
        match self {
            Refusal::DocTooLarge { .. } | Refusal::TooManyItems { .. } => CloseCode::DocTooLarge,
            _ => CloseCode::Malformed,
        }
    }
}

/// Why a room could not go on with its document: typed, so a corrupt
/// record reads as one and not as an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The store failed (I/O, a corrupt record, a failed flush).
    #[error("the store failed: {0}")]
    Store(#[from] tandem_store::StoreError),
    /// The stored document is not a readable update.
    #[error("the stored document cannot be read: {0}")]
    Unreadable(#[from] crate::inspect::InspectError),
    /// yrs panicked while working on the document.
    #[error("the room's document work failed: {0}")]
    Panicked(#[from] crate::yrs_threads::Panicked),
}

/// Messages to the room that are not peer traffic.
pub(crate) enum Control {
    /// A connection joins (boxed, as is `Edit`, so the message stays a
    /// pointer wide in the room's control queue).
    Join(Box<PeerLink>),
    /// An HTTP edit.
    Edit(Box<EditRequest>),
    /// The server is stopping: close peers with 1001, compact, exit.
    Shutdown,
    /// The registry unloaded this room to make space (it had no peer and
    /// nothing in flight, and was the least recently used): compact, exit.
    Evict,
    /// Tests only: make the room task panic (to test its containment).
    #[cfg(test)]
    Panic,
}
