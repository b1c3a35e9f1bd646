//! What can be sent to a room: a joining connection (`PeerLink`), an HTTP
//! [`Edit`], or the order to shut down (`Control`). Peer traffic itself
//! flows over each link's own channels.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::close::CloseCode;
use crate::peer::PeerHealth;
use crate::protocol::Inbound;

/// Identifies one WebSocket connection for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a connection hands the room when it joins.
pub(crate) struct PeerLink {
    /// The connection.
    pub id: PeerId,
    /// Its liveness and outbound backlog (shared with the connection task).
    pub health: Arc<PeerHealth>,
    /// Bounded queue of frames to write to the socket; overflow means 4008.
    pub outbound: mpsc::Sender<Bytes>,
    /// Tells the connection to close with a code (bypasses the outbound queue).
    pub kill: mpsc::Sender<CloseCode>,
    /// Decoded frames from the socket, in order.
    pub inbound: mpsc::Receiver<Vec<Inbound>>,
}

/// A change made without a WebSocket (the HTTP API), applied by the room
/// exactly like a peer's update: stored durably, then broadcast to every peer.
#[derive(Debug)]
pub enum Edit {
    /// Merge a binary v1 Yjs update.
    Update(Bytes),
    /// Replace the whole root text `content` with this string.
    ReplaceText(String),
}

/// Why an [`Edit`] was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The update could not be decoded or applied.
    #[error("invalid update: {0}")]
    Malformed(String),
    /// The store failed to persist the change.
    #[error("the store failed: {0}")]
    Store(String),
    /// The room could not be opened (shutdown, capacity, load failure).
    #[error("document unavailable: {0}")]
    Unavailable(CloseCode),
}

/// An edit and where to report its outcome.
pub(crate) struct EditRequest {
    /// The change to apply.
    pub edit: Edit,
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
}
