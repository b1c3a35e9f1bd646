//! WebSocket close codes: why the server ended a connection.
//!
//! Every way the server ends a connection maps to exactly one [`CloseCode`];
//! the numbers are part of Tandem's public interface (the README lists them).

use std::fmt;

/// Why the server closed a WebSocket. The numeric value is sent in the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the connection ended normally.
    Normal,
    /// 1001: the server is shutting down (reconnect later).
    GoingAway,
    /// 1003: a text frame arrived; the protocol is binary only.
    TextFrame,
    /// 1007: a malformed message: garbage, truncated varint, unknown sync
    /// sub-type, invalid awareness JSON, or an update yrs rejects.
    Malformed,
    /// 1009: a frame larger than the configured maximum message size.
    TooLarge,
    /// 1011: internal error, e.g. the store failed to persist an update
    /// (the update was not acknowledged or broadcast; reconnect to resend it).
    Internal,
    /// 1013: try again later: the store cannot write right now (its disk
    /// syncs fail); `/healthz` says 503 until it recovers by itself.
    TryAgainLater,
    /// 4003: unknown top-level message type.
    UnknownMessageType,
    /// 4008: slow peer: its outbound queue overflowed (reconnect to resync).
    SlowPeer,
    /// 4009: awareness for a client id owned by another connection.
    NotOwner,
    /// 4413: the update would grow the document past `--max-doc-bytes`
    /// (nothing of it was stored; HTTP answers 413).
    DocTooLarge,
    /// 4013: capacity: room full (max peers) or server at max open rooms.
    Capacity,
    /// 4401: no valid token (missing, malformed, bad signature, wrong
    /// algorithm, expired or not yet valid).
    Unauthorized,
    /// 4403: the token does not admit this document, or it was revoked.
    Forbidden,
    /// 4429: the connection sent faster than its inbound rate limit, or its
    /// token's `sub` is at its quota of connections or documents.
    RateLimited,
}

impl CloseCode {
    /// Every code, for metrics.
    pub const ALL: [CloseCode; 15] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::TextFrame,
        CloseCode::Malformed,
        CloseCode::TooLarge,
        CloseCode::Internal,
        CloseCode::TryAgainLater,
        CloseCode::UnknownMessageType,
        CloseCode::SlowPeer,
        CloseCode::NotOwner,
        CloseCode::Capacity,
        CloseCode::DocTooLarge,
        CloseCode::Unauthorized,
        CloseCode::Forbidden,
        CloseCode::RateLimited,
    ];

    /// The number sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::TextFrame => 1003,
            CloseCode::Malformed => 1007,
            CloseCode::TooLarge => 1009,
            CloseCode::Internal => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::UnknownMessageType => 4003,
            CloseCode::SlowPeer => 4008,
            CloseCode::NotOwner => 4009,
            CloseCode::Capacity => 4013,
            CloseCode::DocTooLarge => 4413,
            CloseCode::Unauthorized => 4401,
            CloseCode::Forbidden => 4403,
            CloseCode::RateLimited => 4429,
        }
    }

    /// Short human-readable reason sent with the code (fits the 123-byte limit).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::TextFrame => "text frames are not supported: binary Yjs protocol only",
            CloseCode::Malformed => "malformed message",
            CloseCode::TooLarge => "message too large",
            CloseCode::Internal => "internal error: update not stored, reconnect to resend",
            CloseCode::TryAgainLater => "the store cannot write right now, try again later",
            CloseCode::UnknownMessageType => "unknown message type",
            CloseCode::SlowPeer => "too slow: outbound queue overflowed, reconnect to resync",
            CloseCode::NotOwner => "awareness for a client id owned by another connection",
            CloseCode::Capacity => "server at capacity, try later",
            CloseCode::DocTooLarge => "document too large: the update was not stored",
            CloseCode::Unauthorized => "unauthorized: no valid token",
            CloseCode::Forbidden => "forbidden: the token does not admit this document",
            CloseCode::RateLimited => "too many: inbound rate limit or per-sub quota exceeded",
        }
    }

    /// Position in [`CloseCode::ALL`] (metrics index).
    pub(crate) fn index(self) -> usize {
        CloseCode::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}
