//! The HTTP server: routes, the TCP_NODELAY listener, and graceful shutdown.
//!
//! Shutdown order: stop accepting, close every peer with 1001 and compact
//! every open room, flush the store, return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_store::{DocId, Store};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, with_status};

use crate::access::Principal;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::room::Rooms;
use crate::{api, peer, upgrade, web};

/// What can stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The final store flush failed: recent updates may not be on disk.
    #[error("flushing the store at shutdown failed: {0}")]
    Flush(String),
}

/// Binds `addr` with TCP_NODELAY (accepted sockets inherit it; without it
/// Nagle's algorithm adds ~40 ms to fan-out latency).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    let err = |source| GatewayError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_nodelay(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// Every route: the WebSocket, the HTTP API, then the web editor.
pub fn routes(store: Store, rooms: Rooms, metrics: Arc<Metrics>) -> BoxedFilter<(Box<dyn Reply>,)> {
    let socket_config = upgrade::socket_config(rooms.limits());
    let rooms_for_api = rooms.clone();
    let m = metrics.clone();
    let ws = warp::path!("ws" / String)
        .and(upgrade::request())
        .map(move |id: String, ws: Option<upgrade::Upgrade>| -> Box<dyn Reply> {
            let doc = match DocId::new(id) {
                Ok(doc) => doc,
                Err(e) => return Box::new(with_status(e.to_string(), StatusCode::BAD_REQUEST)),
            };
            let Some(ws) = ws else {
                return Box::new(with_status(
                    "expected a WebSocket upgrade (y-websocket: new WebsocketProvider('ws://HOST/ws', docId, ydoc))",
                    StatusCode::BAD_REQUEST,
                ));
            };
            let (rooms, metrics) = (rooms.clone(), m.clone());
            Box::new(ws.accept(socket_config, move |socket| {
                peer::serve(socket, doc, Principal::anonymous(), &rooms, metrics)
            }))
        });
    ws.or(api::routes(store, rooms_for_api, metrics))
        .unify()
        .or(web::routes())
        .unify()
        .boxed()
}

/// Serves on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let metrics = Arc::new(Metrics::default());
    let rooms = Rooms::new(store.clone(), limits, metrics.clone());
    let filter = routes(store.clone(), rooms.clone(), metrics);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        warp::serve(filter)
            .incoming(listener)
            .graceful(async move {
                let _ = stop_rx.await;
            })
            .run(),
    );
    shutdown.await;
    info!(
        rooms = rooms.open_rooms(),
        "shutting down: closing peers, compacting rooms"
    );
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(20), rooms.shutdown())
        .await
        .is_err()
    {
        warn!("rooms did not stop within 20 s");
    }
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        warn!("connections did not finish within 5 s");
    }
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
    match flushed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(GatewayError::Flush(e.to_string())),
        Err(e) => Err(GatewayError::Flush(e.to_string())),
    }
}
