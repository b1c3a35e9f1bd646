//! The checks every HTTP request passes before its route, in this order:
//!
//! 1. `Origin` not allowed (`--allowed-origins`) → 403; CORS preflights answered.
//! 2. Behind a trusted proxy, the per-address cap for the `X-Forwarded-For` address → 429.
//! 3. WebSocket upgrades: per-address handshake rate → 429.
//! 4. The route policy ([`crate::auth::policy`]): HTTP requests without a
//!    valid token get 401 (`WWW-Authenticate: Bearer`), out of scope or
//!    mode 403. A WebSocket upgrade is upgraded either way: the `/ws` route
//!    reads the [`Admission`] and refused sockets get the y-protocols
//!    *permission denied* message and close 4401/4403
//!    ([`crate::upgrade::deny`]), since browsers cannot see a handshake's status.
//! 5. The body: size limit (413), length required (411), server-wide budget
//!    (503), read deadline.
//! 6. The warp routes. One access line per request at debug, tokens redacted.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use tower_service::Service;
use tracing::debug;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use warp::reply::{Reply, Response, with_status};

use crate::access::Principal;
use crate::auth::{self, Auth, Denial, Session};
use crate::edge::{AllowedOrigins, BodyBudget, BoundedBody, ClientAddr, Clients, Slot};

/// What the edge decided about a WebSocket upgrade (a request extension the
/// `/ws` route reads): the principal and, with auth on, the session that
/// says when the socket must end; or why it is refused.
#[derive(Debug, Clone)]
pub(crate) struct Admission(pub(crate) Result<(Principal, Option<Session>), Denial>);

/// Connection slots an upgraded socket must keep for its lifetime (the TCP
/// connection's, and the per-address one behind a trusted proxy).
#[derive(Debug, Clone, Default)]
pub(crate) struct Held(pub(crate) Vec<Arc<Slot>>);

/// The per-request checks at the edge (module docs, steps 1-6).
pub(crate) struct Gate {
    pub(crate) auth: Auth,
    pub(crate) origins: AllowedOrigins,
    pub(crate) clients: Arc<Clients>,
    pub(crate) bodies: BodyBudget,
    /// `--trust-proxy-headers`: the client address is the last `X-Forwarded-For` entry.
    pub(crate) trust_proxy: bool,
    /// `--header-read-timeout-ms` (also bounds h2c protocol detection).
    pub(crate) header_read_timeout: Duration,
    pub(crate) filter: BoxedFilter<(Box<dyn Reply>,)>,
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

    /// Runs the checks on `req` from `peer` (holding `connection`'s slot),
    /// then the routes; never fails (refusals are responses).
    pub(crate) async fn handle(
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
                match self.auth.admit(token, &need) {
                    // The room applies the same read-only rule to HTTP edits.
                    Ok(principal) => {
                        req.extensions_mut().insert(principal);
                    }
                    Err(denial) => return unauthorized(denial),
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
