//! tandem-gateway: Tandem's warp server. Browsers and any Yjs client connect
//! to `ws://HOST/ws/<doc-id>` and edit a document together; the gateway
//! keeps one *room* per open document, speaks the y-protocols sync and
//! awareness messages, and hands every update to `tandem-store`.
//!
//! # Layout (bottom-up: each module uses only those above it)
//!
//! - [`access`]: who a connection acts as ([`Principal`], [`Mode`]), never a token.
//! - [`close`]: the close codes the server sends, and why.
//! - `config`: limits and timings ([`Limits`], the `tandem serve` flags).
//! - `inspect`: reading an update before yrs applies it (nesting depth,
//!   deleted ranges, bytes left over), recursion-free.
//! - `yrs_threads`: the big-stack threads yrs work runs on (small batches
//!   run in place on a server worker marked as having the same stack).
//! - `rate`: the per-connection inbound rate limit (token buckets on
//!   messages and bytes; 4429), sans I/O.
//! - `web`: the browser editor's static files.
//! - `protocol`: the wire format, sans I/O (frames in, typed messages out).
//! - `metrics`: counters for `/metrics`.
//! - `link`: the leaf types rooms and connections share (peer ids, the
//!   link a connection hands its room, its health, [`TEXT_ROOT`]).
//! - `presence`: the awareness table with per-connection ownership and expiry.
//! - `mailbox`: what is sent to a room and what comes back ([`Edit`],
//!   [`EditError`], [`Refusal`]).
//! - `room`: the room task (an actor) that owns a document, its awareness
//!   and its peers, and the registry ([`Rooms`]) that finds or opens rooms.
//!   Start at `room.rs`; the one write path is `room/doc_state.rs`.
//! - `wire`: WebSocket framing (RFC 6455) on the raw upgraded connection:
//!   a reader that holds no buffer while idle (it allocates each frame's
//!   payload once its header has passed the size limit) and a writer
//!   whose buffer exists only while a write is under way.
//! - `upgrade`: the WebSocket handshake, ours rather than `warp::ws()` (whose
//!   tungstenite stream keeps 2 × 128 KiB of buffers per connection).
//! - `peer`: one WebSocket connection: read, decode frames, write, heartbeat.
//! - `backup`: `GET /api/backup`, the streamed backup archive.
//! - `api`: `/healthz`, `/metrics`, `/api/docs...` (list, read, write), `/api/backup`.
//! - [`edge`]: limits at the edge: origins, connection caps, handshake
//!   rates, request bodies (`--allowed-origins`, `--max-connections`, ...).
//! - [`auth`]: tokens (JWT verification, `docs` scopes, revocation) and the
//!   route policy table; hands the room a [`Principal`], never a token.
//! - `server`: the accept loop (our own, over hyper), the per-request edge
//!   checks, routes, graceful shutdown ([`bind`], [`serve`]). Start here.
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
//! yrs thread while later joins queue behind it (single-flight). When
//! the last peer has left and the grace period passed, the room compacts
//! the document and unloads (a room no peer joined, opened by HTTP only,
//! after `--http-room-grace-ms`). At `--max-open-rooms` the registry first
//! unloads the least recently used room with no peer and nothing in flight.
//!
//! # Durability contract
//!
//! **An update is broadcast only after it is durable in the store.** The
//! room hands the document work of a batch (everything ready at once, up to
//! 256 frames, and HTTP edits) to a yrs thread, which inspects, authorizes
//! and applies each change and appends the batch's *effective* changes (what
//! each actually added; nothing for a no-op) to the store as one atomic
//! record (`Store::append_batch`); the room then waits once for it to be
//! durable (group commit: batches of all rooms in flight share one flush),
//! and only then sends anything (updates to other peers, SyncStep2 replies,
//! HTTP answers), in arrival order. Consecutive updates from one sender
//! within a batch are sent to the others as one merged update (yrs
//! `merge_updates_v1`). So any edit a peer has received survives
//! a crash (with `--durability relaxed`, "durable" means within the flush
//! interval). If the store fails, the room closes every peer with 1011 and
//! unloads; clients reconnect and resend what the store lacks.
//!
//! # Protocol
//!
//! One y-protocols message per WebSocket message (the JS client reads only
//! the first); a message over 64 KiB goes out as several WebSocket frames
//! (fragments), so no connection copies a large document whole. On
//! join the server sends SyncStep1, then the current awareness states. A
//! client's SyncStep1 gets a SyncStep2 with what it lacks; its SyncStep2 and
//! Updates are applied, stored and sent to every *other* peer; awareness
//! changes go to every peer *including* the sender (a lone JS client
//! otherwise hears nothing and reconnects every 30 s). Query-awareness is
//! answered. Auth messages (type 2) from clients are accepted and ignored:
//! the token is checked at the upgrade ([`server`]); a refused connection
//! gets an auth *permission denied* message, then 4401 or 4403. Awareness
//! states are removed when their connection ends and expire after 30 s
//! without renewal. Peers are pinged every 10 s and
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
//! | 1007 | malformed message: garbage, truncated varint, unknown sync sub-type, invalid awareness JSON, update yrs rejects, bytes left over after an update, types nested past `--max-nesting-depth`, pending content or deletions past `--max-pending-bytes` / `--max-pending-deletes` |
//! | 1009 | frame larger than `--max-message-bytes`, or an awareness state larger than `--max-awareness-bytes` |
//! | 1011 | internal error: the store failed (the update was not acknowledged) or the room failed (a panic); reconnect |
//! | 1013 | try again later: the store cannot write right now (disk syncs fail; `/healthz` is 503); it recovers by itself |
//! | 4003 | unknown top-level message type |
//! | 4008 | slow peer: outbound queue overflowed, by count (`--peer-queue`) or bytes (`--peer-queue-bytes`), or the server's queued bytes passed `--max-queued-bytes`; reconnect to resync |
//! | 4009 | awareness that advances a client id owned by another live connection |
//! | 4013 | capacity: room full, or server at max open rooms with every open room in use (try later) |
//! | 4413 | the update would grow the document past `--max-doc-bytes` or `--max-doc-items` (not stored) |
//! | 4401 | no valid token (after an auth *permission denied* message) |
//! | 4403 | the token does not admit this document, or was revoked (likewise) |
//! | 4429 | the connection sent more than its inbound rate limit (`--peer-msgs-per-sec` / `--peer-bytes-per-sec` and their bursts), or its token's `sub` is at `--max-connections-per-sub` / `--max-rooms-per-sub` |
//!
//! Each bad input closes only the offending connection, with a warning log.
//! A frame whose message framing fails to decode is rejected whole, so none
//! of it reaches the room or the store. An update's content is read by the
//! room (on a yrs thread, not the runtime's workers): a refused update is
//! not stored, the updates the batch accepted before it (even from the same
//! frame) are stored and broadcast as usual, and if yrs had already applied
//! it the room reloads its document from the store.
//!
//! # Containment
//!
//! No input can end the process or a room silently. yrs work runs on
//! threads with a 64 MiB stack and the nesting depth an update may create is
//! bounded before yrs sees it (a stack overflow cannot be caught); a panic
//! in yrs fails only its room (peers 1011); a panic in the room task drops
//! it, and a drop guard unregisters it and frees its slot; the next join
//! reloads from the store. The measured costs behind each default are in
//! `room/doc_state.rs` and `yrs_threads.rs`.

pub mod access;
mod api;
pub mod auth;
mod backup;
pub mod close;
mod config;
pub mod edge;
mod inspect;
mod link;
mod mailbox;
mod metrics;
mod peer;
mod presence;
mod protocol;
mod rate;
mod room;
mod server;
mod upgrade;
mod web;
mod wire;
mod yrs_threads;

pub use access::{Mode, Principal};
pub use close::CloseCode;
pub use config::{Limits, MAX_NESTING_DEPTH_CAP};
pub use inspect::{Encoding, InspectError};
pub use link::TEXT_ROOT;
pub use mailbox::Refusal;
pub use mailbox::{Edit, EditError, RoomError};
pub use metrics::Metrics;
pub use room::Rooms;
pub use server::{Edge, GatewayError, bind, routes, serve};
pub use yrs_threads::{Panicked, STACK_BYTES, mark_big_stack};
