//! What can be sent to a room: a joining connection ([`PeerLink`]), an HTTP
//! [`Edit`], or the order to shut down (`Control`). Peer traffic itself
//! flows over each link's own channels.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::access::Principal;
use crate::close::CloseCode;
use crate::inspect::Encoding;
use crate::link::PeerLink;
use crate::room::Refusal;

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
    /// The store failed to persist the change.
    #[error("the store failed: {0}")]
    Store(String),
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

/// Messages to the room that are not peer traffic.
pub(crate) enum Control {
    /// A connection joins.
    Join(PeerLink),
    /// An HTTP edit.
    Edit(EditRequest),
    /// The server is stopping: close peers with 1001, compact, exit.
    Shutdown,
    /// Tests only: make the room task panic (to test its containment).
    #[cfg(test)]
    Panic,
}
