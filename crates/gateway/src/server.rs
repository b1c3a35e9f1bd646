//! The HTTP server: the accept loop, the checks every request passes at the
//! edge, the routes, and graceful shutdown.
//!
//! We drive hyper ourselves (not `warp::serve`) so that the edge is ours:
//! each accepted socket gets TCP_NODELAY and must get a connection slot
//! ([`Clients`]: server-wide and per-address caps; refused at once, never
//! queued); hyper serves HTTP/1.1 only (cleartext HTTP/2 with
//! `--http2-cleartext`) with a header-read timeout; then every request, in
//! `Gate::handle`, in this order:
//!
//! 1. `Origin` not allowed (`--allowed-origins`) → 403; CORS preflights answered.
//! 2. Behind a trusted proxy, the per-address cap for the `X-Forwarded-For` address → 429.
//! 3. WebSocket upgrades: per-address handshake rate → 429.
//! 4. The route policy ([`crate::auth::policy`]): HTTP requests without a
//!    valid token get 401 (`WWW-Authenticate: Bearer`), out of scope or
//!    mode 403. A WebSocket upgrade is upgraded either way: refused ones
//!    get the y-protocols *permission denied* message and close 4401/4403
//!    ([`crate::upgrade::deny`]), since browsers cannot see a handshake's status.
//! 5. The body: size limit (413), length required (411), server-wide budget
//!    (503), read deadline.
//! 6. The warp routes. One access line per request at debug, tokens redacted.
//!
//! Shutdown order: stop accepting, close every peer with 1001 and compact
//! every open room, flush the store, return.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tandem_store::{DocId, Store};
use tokio::net::{TcpListener, TcpSocket};
use tower_service::Service;
use tracing::{debug, info, warn};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use warp::reply::{Reply, Response, with_status};

use crate::access::Principal;
use crate::auth::{self, Auth, Denial, Session, TokenError};
use crate::config::Limits;
use crate::edge::{AllowedOrigins, BodyBudget, BoundedBody, ClientAddr, Clients, EdgeLimits, Slot};
use crate::metrics::Metrics;
use crate::rooms::Rooms;
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

/// What the edge decided about a WebSocket upgrade (a request extension the
/// `/ws` route reads): the principal and, with auth on, the session that
/// says when the socket must end; or why it is refused.
#[derive(Debug, Clone)]
struct Admission(Result<(Principal, Option<Session>), Denial>);

/// Connection slots an upgraded socket must keep for its lifetime (the TCP
/// connection's, and the per-address one behind a trusted proxy).
#[derive(Debug, Clone, Default)]
struct Held(Vec<Arc<Slot>>);

/// Every route: the WebSocket, the HTTP API, then the web editor.
pub fn routes(
    store: Store,
    rooms: Rooms,
    metrics: Arc<Metrics>,
    auth: Auth,
) -> BoxedFilter<(Box<dyn Reply>,)> {
    let socket_config = upgrade::socket_config(rooms.limits());
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
                        return Box::new(ws.accept(socket_config, move |socket| upgrade::deny(socket, denial)));
                    }
                };
                if principal.sub != Principal::anonymous().sub {
                    info!(doc = %doc.as_str(), sub = %principal.sub, mode = %principal.mode, "websocket admitted");
                }
                let (rooms, metrics, held) = (rooms.clone(), m.clone(), held.unwrap_or_default());
                Box::new(ws.accept(socket_config, move |socket| {
                    // Wired at merge: the room-core branch adds `principal` to
                    // `peer::serve` (read-only filtering in the room), and the
                    // peer races `session.ended()` to close with 4401/4403 at
                    // `exp` or at a revocation (see `auth::session`).
                    let (_principal, _session) = (principal, session);
                    let connection = peer::serve(socket, doc, &rooms, metrics);
                    async move {
                        let _held = held;
                        connection.await
                    }
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

/// The per-request checks at the edge (module docs, steps 1-6).
struct Gate {
    auth: Auth,
    origins: AllowedOrigins,
    clients: Arc<Clients>,
    bodies: BodyBudget,
    /// `--trust-proxy-headers`: the client address is the last `X-Forwarded-For` entry.
    trust_proxy: bool,
    /// `--header-read-timeout-ms` (also bounds h2c protocol detection).
    header_read_timeout: Duration,
    filter: BoxedFilter<(Box<dyn Reply>,)>,
}

/// A refusal at the edge: a status and a short plain-text reason.
fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    with_status(reason.into(), status).into_response()
}

/// The client address `X-Forwarded-For` names (its last entry: the one
/// the trusted proxy added), if any.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

impl Gate {
    fn client_addr(&self, headers: &HeaderMap, peer: SocketAddr) -> ClientAddr {
        match forwarded_for(headers).filter(|_| self.trust_proxy) {
            Some(ip) => ClientAddr {
                ip,
                forwarded: true,
            },
            None => ClientAddr {
                ip: peer.ip(),
                forwarded: false,
            },
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        connection: Arc<Slot>,
    ) -> Result<Response, Infallible> {
        let client = self.client_addr(req.headers(), peer);
        let (method, shown) = (req.method().clone(), auth::redacted(req.uri()));
        let response = self.check_and_route(req, client, connection).await;
        debug!(client = %client.ip, %method, uri = %shown, status = response.status().as_u16(), "request");
        Ok(response)
    }

    async fn check_and_route(
        &self,
        mut req: Request<Incoming>,
        client: ClientAddr,
        connection: Arc<Slot>,
    ) -> Response {
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).cloned();
        if let Some(origin) = &origin {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            if !origin.to_str().is_ok_and(|o| self.origins.allows(o, host)) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "origin not allowed (--allowed-origins)",
                );
            }
            if req.method() == Method::OPTIONS
                && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            {
                return preflight(origin.clone());
            }
        }
        let mut held = Held(vec![connection]);
        if self.trust_proxy {
            match self.clients.client(client) {
                Some(slot) => held.0.push(Arc::new(slot)),
                None => {
                    return refuse(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections from this address",
                    );
                }
            }
        }
        let upgrade = headers.contains_key(header::UPGRADE);
        if upgrade && !self.clients.allow_handshake(client) {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many WebSocket handshakes from this address",
            );
        }
        let token = auth::request_token(headers, req.uri());
        match req.uri().path().strip_prefix("/ws/").filter(|_| upgrade) {
            // Refused WebSockets are upgraded first (browsers cannot read a
            // handshake's status): the route sends the reason.
            Some(id) => {
                let admission = Admission(self.auth.admit_websocket(token, id));
                req.extensions_mut().insert(admission);
            }
            None => {
                let need = auth::policy::need(req.method(), req.uri().path());
                if let Err(denial) = self.auth.admit(token, &need) {
                    return unauthorized(denial);
                }
            }
        }
        let allowance = match self.bodies.reserve(req.headers()) {
            Ok(allowance) => allowance,
            Err(refusal) => return refuse(refusal.status(), refusal.to_string()),
        };
        req.extensions_mut().insert(held);
        let req = req.map(|body| BoundedBody::new(body, allowance));
        let mut routes = warp::service(self.filter.clone());
        let mut response = match routes.call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if let Some(origin) = origin {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
        response
    }
}

/// 401 (with `WWW-Authenticate: Bearer`) or 403 for a refused HTTP request.
fn unauthorized(denial: Denial) -> Response {
    let mut response = refuse(denial.status(), denial.to_string());
    if denial.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tandem\""),
        );
    }
    response
}

/// The answer to an allowed origin's CORS preflight.
fn preflight(origin: HeaderValue) -> Response {
    let mut response = refuse(StatusCode::NO_CONTENT, "");
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    response
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
