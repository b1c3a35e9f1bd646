//! The WebSocket upgrade (RFC 6455 handshake), done here instead of with
//! `warp::ws()` so that the connection's frames are ours ([`crate::wire`]).
//!
//! Why not `warp::ws()`: warp 0.4 exposes only the message and frame size
//! limits, so every connection got tungstenite's default 128 KiB read buffer
//! and 128 KiB write-coalescing target. The read buffer is allocated per
//! connection and zero-filled up to its capacity on every socket read, which
//! cost ~138 KiB RSS per idle connection and made `memset` the largest item
//! of the server's CPU profile under fan-out. Even a 2 KiB tungstenite
//! buffer was a third of an idle connection; `wire` holds none while idle.
//!
//! The handshake is what warp does internally: check the request headers,
//! take hyper's `OnUpgrade` from the request, answer 101 with
//! `sec-websocket-accept`, and once hyper hands over the connection, run
//! the connection on it (framed by `wire`) on a spawned task. Connections upgraded
//! here, like warp's, leave hyper's graceful shutdown: the server closes them
//! through their rooms (1001) at shutdown.
//!
//! Refusing after the upgrade: a browser cannot read an HTTP status of a
//! failed WebSocket handshake, so an unauthorized or forbidden connection
//! is upgraded and then gets [`deny`]: the y-protocols auth message
//! *permission denied* with a reason (its own frame), then close 4401/4403.

use std::convert::Infallible;
use std::future::Future;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tracing::debug;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::auth::Denial;
use crate::wire::Writer;

/// An upgraded WebSocket connection (framed by [`crate::wire`]).
pub(crate) type Socket = crate::wire::Socket;

/// A valid WebSocket upgrade request, ready to be accepted.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Extracts `Some(Upgrade)` when the request is a WebSocket upgrade (GET,
/// `connection: upgrade`, `upgrade: websocket`, `sec-websocket-version: 13`,
/// a `sec-websocket-key`, and a connection hyper can upgrade), else `None`.
///
/// Never rejects, so the route can answer a plain request with a helpful 400.
pub(crate) fn request() -> impl Filter<Extract = (Option<Upgrade>,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(
            |method: Method, headers: HeaderMap, on_upgrade: Option<OnUpgrade>| {
                Upgrade::from_request(&method, &headers, on_upgrade?)
            },
        )
}

impl Upgrade {
    fn from_request(method: &Method, headers: &HeaderMap, on_upgrade: OnUpgrade) -> Option<Self> {
        let key = websocket_key(method, headers)?.clone();
        Some(Upgrade { key, on_upgrade })
    }

    /// Answers 101 Switching Protocols and runs `serve` on the upgraded
    /// connection (on its own task) once hyper hands it over.
    pub(crate) fn accept<F, Fut>(self, serve: F) -> impl Reply
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        let upgrade = async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let socket = Socket::new(TokioIo::new(upgraded));
            // The connection runs on a task of its own, sized to its future
            // alone: awaited here, it would also carry this task's upgrade
            // state (~1.6 KiB more per connection).
            tokio::spawn(serve(socket));
        };
        tokio::spawn(upgrade);
        let mut response = Response::default();
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// y-protocols message type `auth` (y-websocket's `messageAuth`).
const MESSAGE_AUTH: u32 = 2;
/// y-protocols auth sub-type *permission denied* (`auth.js`'s `messagePermissionDenied`).
const PERMISSION_DENIED: u32 = 0;
/// How long a refused socket gets to take its close frame.
const DENY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The y-protocols *permission denied* message: `varUint(2)` (auth),
/// `varUint(0)` (permission denied), `varString(reason)`.
pub(crate) fn permission_denied(reason: &str) -> Vec<u8> {
    use yrs::encoding::write::Write;
    let mut frame = Vec::with_capacity(reason.len() + 4);
    frame.write_var(MESSAGE_AUTH);
    frame.write_var(PERMISSION_DENIED);
    frame.write_string(reason);
    frame
}

/// Refuses an upgraded connection: *permission denied* with the reason,
/// then the close code (4401 or 4403). Nothing the client sent is read.
pub(crate) async fn deny(socket: Socket, denial: Denial) {
    let reason = denial.to_string();
    let code = denial.close_code();
    let mut out = Writer::new(0);
    out.frame(
        OpCode::Data(Data::Binary),
        true,
        &permission_denied(&reason),
    );
    out.close(code.code(), code.reason());
    let sent = tokio::time::timeout(DENY_TIMEOUT, out.flush(&socket)).await;
    if !matches!(sent, Ok(Ok(()))) {
        debug!(?sent, "refused socket did not take its close frame");
    }
}

/// The `sec-websocket-key` of a valid WebSocket upgrade request (what
/// `warp::ws()` checks), or `None` for any other request.
fn websocket_key<'h>(method: &Method, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let upgrade_websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())?;
    (method == Method::GET && connection_upgrade && upgrade_websocket && version_13).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const BROWSER: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn permission_denied_is_the_y_protocols_layout() {
        // messageAuth, messagePermissionDenied, varString("no"): length then UTF-8.
        assert_eq!(permission_denied("no"), vec![2, 0, 2, b'n', b'o']);
    }

    #[test]
    fn accepts_a_browser_upgrade() {
        let map = headers(&BROWSER);
        let key = websocket_key(&Method::GET, &map);
        assert_eq!(key.unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
        // RFC 6455 section 1.3's example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn header_values_are_case_insensitive_tokens() {
        let map = headers(&[
            ("connection", "UPGRADE"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "x"),
        ]);
        assert!(websocket_key(&Method::GET, &map).is_some());
    }

    #[test]
    fn rejects_anything_else() {
        assert!(websocket_key(&Method::POST, &headers(&BROWSER)).is_none());
        for skip in 0..BROWSER.len() {
            let partial: Vec<_> = (0..BROWSER.len())
                .filter(|&i| i != skip)
                .map(|i| BROWSER[i])
                .collect();
            assert!(websocket_key(&Method::GET, &headers(&partial)).is_none());
        }
        let mut wrong = BROWSER;
        wrong[2] = ("sec-websocket-version", "8");
        assert!(websocket_key(&Method::GET, &headers(&wrong)).is_none());
        wrong = BROWSER;
        wrong[0] = ("connection", "keep-alive");
        assert!(websocket_key(&Method::GET, &headers(&wrong)).is_none());
        wrong = BROWSER;
        wrong[1] = ("upgrade", "h2c");
        assert!(websocket_key(&Method::GET, &headers(&wrong)).is_none());
    }
}
