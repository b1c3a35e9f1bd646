//! tandem-bench: a load generator for any server that speaks the Yjs sync
//! protocol over WebSockets (Tandem, the reference Node `@y/websocket-server`,
//! Hocuspocus, y-sweet). It depends on no Tandem crate: it is a client.
//!
//! Layout:
//! - [`trace`]: real editing traces (or a generated one) replayed into yrs
//!   updates, one per keystroke.
//! - [`protocol`]: y-protocols messages, sans-IO; naming an update by its ids.
//! - [`dialect`]: how a server frames those messages (y-websocket, Hocuspocus).
//! - [`conn`]: one client's WebSocket (TCP_NODELAY, one message per frame, join).
//! - [`ledger`]: send times and receipts: latency and missing deliveries.
//! - [`measure`]: percentiles, and CPU/RSS from `/proc`.
//! - [`target`]: the server under test and its [`target::Flavor`] (URL scheme,
//!   framing, document creation); spawns, kills and restarts it when asked.
//! - [`workloads`]: fan-out, throughput, connections, cold join, restart,
//!   join storm, echo clients, durability under `kill -9`.
//! - [`report`]: Markdown/JSON rows (CPU per delivered update among them)
//!   and Tandem/peer ratios, per round and as their median.
//! - [`relay`]: the fan-out floor, a relay that does nothing but forward
//!   (what the generator and the kernel cost by themselves).
//!
//! Start with [`workloads::fanout`]: it shows the whole measuring loop.

pub mod conn;
pub mod dialect;
pub mod ledger;
pub mod measure;
pub mod protocol;
pub mod relay;
pub mod report;
pub mod target;
pub mod trace;
pub mod workloads;
