//! Test support for Tandem's end-to-end tests: start the real `tandem`
//! binary and talk the Yjs protocol to it over real sockets.
//!
//! - [`server`]: [`TestServer`] spawns `tandem serve` on a free port with a
//!   temporary data directory, waits for `/healthz`, stops it with SIGTERM
//!   or SIGKILL, and restarts it on the same data.
//! - [`tokens`]: test tokens (the gateway's own signing code), HTTP
//!   requests with headers, WebSocket handshakes whose refusal can be read.
//! - [`client`]: [`Peer`], a small Yjs client (yrs + tokio-tungstenite)
//!   editing the root `Y.Text` "content" and sending awareness, and
//!   [`RawSocket`] for sending hand-made (bad) frames.
//!
//! Every wait is a condition with a timeout ([`TIMEOUT`]); no test sleeps
//! and hopes.

pub mod client;
pub mod server;
pub mod tokens;

pub use client::{Peer, RawSocket};
pub use server::TestServer;

use std::time::Duration;

/// Upper bound for any single wait in a test.
pub const TIMEOUT: Duration = Duration::from_secs(10);
