//! tandem-gateway: Tandem's warp server. Browsers and any Yjs client connect
//! to `ws://HOST/ws/<doc-id>` and edit a document together; the gateway
//! keeps one *room* per open document, speaks the y-protocols sync and
//! awareness messages, and hands every update to `tandem-store`.
//!
//! # Layout
//!
//! - [`server`]: routes, the TCP_NODELAY listener, graceful shutdown. Start here.
//! - [`rooms`]: the registry: finds or opens (single-flight) a document's room.
//! - [`room`]: the room task that owns a document, its awareness and its peers.
//!   Its lifecycle is in `room.rs`; applying a batch (apply → store → await
//!   durable → fan out) in `room/batch.rs`, merging a sender's consecutive
//!   updates in `room/run.rs`, HTTP edits in `room/edit.rs`.
//! - [`mailbox`]: what connections and the HTTP API send to a room.
//! - [`upgrade`]: the WebSocket handshake, ours rather than `warp::ws()` so
//!   each connection gets small socket buffers (2 KiB) instead of 2 × 128 KiB.
//! - [`peer`]: one WebSocket connection: read, decode, write, heartbeat.
//! - [`protocol`]: the wire format, sans I/O (frames in, typed messages out).
//! - [`presence`]: the awareness table with per-connection ownership and expiry.
//! - [`access`]: who a connection acts as ([`access::Principal`], [`access::Mode`]), never a token.
//! - [`close`]: the close codes the server sends, and why.
//! - [`config`]: limits and timings (`tandem serve` flags).
//! - [`api`]: `/healthz`, `/metrics`, `/api/docs...` (list, read, write).
//! - [`metrics`]: counters for `/metrics`.
//! - [`web`]: the browser editor's static files.
//!
//! # Concurrency model: one task per room (an actor)
//!
//! Each open document has exactly one room task, which alone owns the yrs
//! `Doc`, the awareness table and the list of peers; nothing is behind a
//! lock. Connections send decoded messages to their room over a bounded
//! per-peer channel (a flooding peer is back-pressured, others are not) and
//! receive frames over a bounded per-peer outbound queue. The room handles
//! everything that is ready as one batch, in arrival order per peer. The
//! first join opens the room and loads the document from the store on a
//! blocking thread while later joins queue behind it (single-flight). When
//! the last peer has left and the grace period passed, the room compacts
//! the document and unloads.
//!
//! # Durability contract
//!
//! **An update is broadcast only after it is durable in the store.** The
//! room applies each update of a batch (everything ready at once, up to 256
//! frames), appends the batch's updates to the store as one atomic record
//! (`Store::append_batch`), then waits once for it to be durable (group
//! commit: batches of all rooms in flight together share one flush), and
//! only then sends anything (updates to other peers, SyncStep2 replies), in
//! arrival order. Consecutive updates from one sender within a batch are
//! sent to the others as one merged update (yrs `merge_updates_v1`; the
//! store keeps them as received). So any edit a peer has received survives
//! a crash (with `--durability relaxed`, "durable" means within the flush
//! interval). If the store fails, the room closes every peer with 1011 and
//! unloads; clients reconnect and resend what the store lacks.
//!
//! # Protocol
//!
//! One message per WebSocket frame (the JS client reads only the first). On
//! join the server sends SyncStep1, then the current awareness states. A
//! client's SyncStep1 gets a SyncStep2 with what it lacks; its SyncStep2 and
//! Updates are applied, stored and sent to every *other* peer; awareness
//! changes go to every peer *including* the sender (a lone JS client
//! otherwise hears nothing and reconnects every 30 s). Query-awareness is
//! answered. Auth messages (type 2) are accepted and ignored: there is no
//! auth yet. Awareness states are removed when their connection ends and
//! expire after 30 s without renewal. Peers are pinged every 10 s and
//! dropped after two silent intervals.
//!
//! Awareness ownership: the connection that first sets a client id's state
//! owns it until it disconnects. Echoes of other peers' states (stock
//! y-websocket clients re-send what they receive, with the same clock) are
//! ignored; advancing the clock of an id owned by another connection that
//! is still live closes the sender with 4009. An owner silent for 1.5 ping
//! intervals is presumed dead (a half-open socket of a client that has
//! already reconnected), and its ids may be taken over.
//!
//! Slow peers: each peer's outbound queue is bounded in messages and in
//! bytes; a peer over either bound is closed with 4008 (its client
//! reconnects and resyncs with SyncStep1/2, so it never misses an update),
//! and the room never waits for it. A write blocked for two ping intervals
//! also ends the connection.
//!
//! # Close codes
//!
//! | code | meaning |
//! |------|---------|
//! | 1000 | normal close |
//! | 1001 | server shutting down |
//! | 1003 | text frame (the protocol is binary only) |
//! | 1007 | malformed message: garbage, truncated varint, unknown sync sub-type, invalid awareness JSON, update yrs rejects |
//! | 1009 | frame larger than `--max-message-bytes` |
//! | 1011 | internal error (e.g. the store failed: the update was not acknowledged) |
//! | 4003 | unknown top-level message type |
//! | 4008 | slow peer: outbound queue overflowed, by count (`--peer-queue`) or bytes (`--peer-queue-bytes`); reconnect to resync |
//! | 4009 | awareness that advances a client id owned by another live connection |
//! | 4013 | capacity: room full or server at max open rooms (try later) |
//!
//! Each bad input closes only the offending connection, with a warning log.
//! A frame that fails to decode is rejected whole, so none of it reaches the
//! room or the store; an update yrs rejects (or panics on) is not stored, and
//! the room reloads its document from the store in case yrs left partial state,
//! after storing the updates it had already accepted (even from the same
//! frame), which are then broadcast as usual.

pub mod access;
pub mod api;
pub mod close;
pub mod config;
mod inspect;
mod link;
pub mod mailbox;
pub mod metrics;
pub mod peer;
pub mod presence;
pub mod protocol;
pub mod room;
pub mod rooms;
pub mod server;
pub mod upgrade;
pub mod web;
mod yrs_threads;

pub use close::CloseCode;
pub use config::Limits;
pub use link::TEXT_ROOT;
pub use server::{GatewayError, bind, routes, serve};
