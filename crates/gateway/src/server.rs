//! The HTTP server: the accept loop, the routes, and graceful shutdown.
//!
//! We drive hyper ourselves (not `warp::serve`) so that the edge is ours:
//! each accepted socket gets TCP_NODELAY (per connection, which
//! `warp::serve` could not do) and must get a connection slot
//! ([`Clients`]: server-wide and per-address caps; refused at once, never
//! queued); hyper serves HTTP/1.1 only (cleartext HTTP/2 with
//! `--http2-cleartext`) with a header-read timeout; then every request goes
//! through the edge's gate (`edge/gate.rs`: origin, per-address caps,
//! handshake rate, the route policy, body bounds) before the routes below.
//!
//! Shutdown order: stop accepting, close every peer with 1001 and compact
//! every open room, flush the store, return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tandem_store::{DocId, Store};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{debug, info, warn};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, with_status};

use crate::access::Principal;
use crate::auth::{self, Auth, Denial, TokenError};
use crate::config::Limits;
use crate::edge::gate::{Admission, Gate, Held};
use crate::edge::{AllowedOrigins, BodyBudget, ClientAddr, Clients, EdgeLimits};
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
    /// An edge setting is unusable (e.g. a malformed `--allowed-origins`).
    #[error("{0}")]
    Config(String),
    /// The final store flush failed: recent updates may not be on disk.
    #[error("flushing the store at shutdown failed: {0}")]
    Flush(String),
}

/// Who may do what, and the bounds at the edge.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Token checking (`--auth`).
    pub auth: Auth,
    /// Connection, origin, timeout and body bounds.
    pub limits: EdgeLimits,
}

/// Binds `addr` with TCP_NODELAY (accepted sockets inherit it, and the
/// accept loop sets it again on each; without it Nagle's algorithm adds
/// ~40 ms to fan-out latency).
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
pub fn routes(
    store: Store,
    rooms: Rooms,
    metrics: Arc<Metrics>,
    auth: Auth,
) -> BoxedFilter<(Box<dyn Reply>,)> {
    let rooms_for_api = rooms.clone();
    let m = metrics.clone();
    let ws = warp::path!("ws" / String)
        .and(upgrade::request())
        .and(warp::ext::optional::<Admission>())
        .and(warp::ext::optional::<Held>())
        .map(
            move |id: String,
                  ws: Option<upgrade::Upgrade>,
                  admission: Option<Admission>,
                  held: Option<Held>|
                  -> Box<dyn Reply> {
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
                // Fail closed: a request that did not pass the edge is not admitted.
                let admission = admission.map(|a| a.0).unwrap_or(Err(Denial::Unauthorized(
                    TokenError::Invalid("not checked at the edge"),
                )));
                let (principal, session) = match admission {
                    Ok(admitted) => admitted,
                    Err(denial) => {
                        info!(doc = %doc.as_str(), code = denial.close_code().code(), reason = %denial, "websocket refused");
                        return Box::new(ws.accept(move |socket| upgrade::deny(socket, denial)));
                    }
                };
                if principal.sub != Principal::anonymous().sub {
                    info!(doc = %doc.as_str(), sub = %principal.sub, mode = %principal.mode, "websocket admitted");
                }
                let (rooms, metrics, held) = (rooms.clone(), m.clone(), held.unwrap_or_default());
                Box::new(ws.accept(move |socket| {
                    // The room filters by the principal's mode; the session
                    // (with auth on) ends the connection with 4401 at `exp`
                    // or 4403 at a matching revocation.
                    // Only a token's `sub` is counted against the per-`sub`
                    // quotas; without auth every caller is `anonymous`.
                    let counted = session.is_some();
                    let ends: peer::Ends = match session {
                        Some(session) => Box::pin(async move { session.ended().await }),
                        None => Box::pin(std::future::pending()),
                    };
                    // `map`, not an `async` block: one holding `held` and
                    // the connection would store both twice (its captures,
                    // then its locals), ~1 KiB more per connection task.
                    peer::serve(socket, doc, principal, counted, ends, &rooms, metrics)
                        .map(move |()| drop(held))
                }))
            },
        );
    ws.or(auth::admin::routes(auth))
        .unify()
        .or(api::routes(store, rooms_for_api, metrics))
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
    edge: Edge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let origins =
        AllowedOrigins::new(&edge.limits.allowed_origins).map_err(GatewayError::Config)?;
    let max_connections = edge.limits.effective_max_connections();
    if max_connections < edge.limits.max_connections {
        warn!(
            max_connections,
            "--max-connections lowered to stay below the open-files limit"
        );
    }
    let metrics = Arc::new(Metrics::default());
    let rooms = Rooms::new(store.clone(), limits, metrics.clone());
    let gate = Arc::new(Gate {
        filter: routes(store.clone(), rooms.clone(), metrics, edge.auth.clone()),
        auth: edge.auth,
        origins,
        clients: Clients::new(
            max_connections,
            edge.limits.max_connections_per_ip,
            edge.limits.max_handshakes_per_ip_per_sec,
        ),
        bodies: BodyBudget::new(
            edge.limits.body_budget_bytes,
            edge.limits.max_body_bytes,
            edge.limits.body_read_timeout(),
        ),
        trust_proxy: edge.limits.trust_proxy_headers,
        header_read_timeout: edge.limits.header_read_timeout(),
    });
    let http = http_builder(&edge.limits);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(accept_loop(listener, gate, http, async move {
        let _ = stop_rx.await;
    }));
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

/// hyper's connection settings: HTTP/1.1 with a header-read timeout, or,
/// with `--http2-cleartext`, hyper-util's auto-detecting builder (HTTP/1.1
/// or h2c prior knowledge).
///
/// Why not always the auto builder with `http1_only()`: its upgrade-capable
/// connection ignores that setting and still sniffs for the HTTP/2 preface,
/// without any timeout on those first bytes (a socket dripping the preface
/// one byte a minute would never be closed). The HTTP/1-only path has no
/// sniffing; with h2c the accept loop closes a connection that has not
/// started a request within the header-read timeout.
#[derive(Clone)]
enum Http {
    One(hyper::server::conn::http1::Builder),
    WithH2c(auto::Builder<TokioExecutor>),
}

fn http_builder(limits: &EdgeLimits) -> Http {
    if limits.http2_cleartext {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout());
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.header_read_timeout())
            .keep_alive_timeout(limits.header_read_timeout())
            .max_concurrent_streams(64);
        Http::WithH2c(builder)
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout());
        Http::One(builder)
    }
}

/// Serves one connection until it ends or `stop` fires; then lets the
/// request in progress finish (hyper's graceful shutdown). Upgraded
/// WebSockets have already left the connection and are closed by their rooms.
macro_rules! serve_until_stopped {
    ($connection:expr, $stop:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => result.err().map(|e| e.to_string()),
            _ = $stop.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.await.err().map(|e| e.to_string())
            }
        }
    }};
}

/// Accepts until `stop`, then lets open HTTP connections finish.
///
/// Shutdown is mini-redis's: a watch channel tells every connection task to
/// stop, and each task holds a clone of `done`; when the last one ends the
/// receiver sees the channel close.
async fn accept_loop(
    listener: TcpListener,
    gate: Arc<Gate>,
    http: Http,
    stop: impl Future<Output = ()>,
) {
    let (stopping_tx, stopping) = tokio::sync::watch::channel(());
    let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Behind a trusted proxy every TCP peer is the proxy: the
        // per-address cap then applies per request, to the forwarded address.
        let capped_peer = (!gate.trust_proxy).then_some(ClientAddr {
            ip: peer.ip(),
            forwarded: false,
        });
        let Some(slot) = gate.clients.connect(capped_peer) else {
            debug!(%peer, "connection refused: at --max-connections or --max-connections-per-ip");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(slot);
        let g = gate.clone();
        // Set by the first request: until then an h2c-capable connection is
        // still in protocol detection, which hyper does not time out.
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let service = hyper::service::service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            g.clone().handle(req, peer, slot.clone())
        });
        let io = TokioIo::new(stream);
        let (http, mut stopping, done) = (http.clone(), stopping.clone(), done.clone());
        let first_request_within = gate.header_read_timeout;
        tokio::spawn(async move {
            let _done = done;
            let error = match &http {
                Http::One(h1) => {
                    serve_until_stopped!(h1.serve_connection(io, service).with_upgrades(), stopping)
                }
                Http::WithH2c(auto) => {
                    let connection = auto.serve_connection_with_upgrades(io, service);
                    tokio::pin!(connection);
                    let detection = tokio::time::sleep(first_request_within);
                    tokio::pin!(detection);
                    let (mut detecting, mut stopped) = (true, false);
                    loop {
                        tokio::select! {
                            result = connection.as_mut() => break result.err().map(|e| e.to_string()),
                            _ = &mut detection, if detecting => {
                                detecting = false;
                                if !started.load(Ordering::Relaxed) {
                                    break Some("no request within --header-read-timeout-ms".to_owned());
                                }
                            }
                            _ = stopping.changed(), if !stopped => {
                                stopped = true;
                                connection.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }
            };
            if let Some(error) = error {
                debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(());
    drop(done);
    let _ = all_done.recv().await;
}
