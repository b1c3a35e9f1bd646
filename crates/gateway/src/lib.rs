//! tandem-gateway: warp server with WebSocket rooms (placeholder until the gateway lands).

pub mod web;
