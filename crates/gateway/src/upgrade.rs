//! The WebSocket upgrade (RFC 6455 handshake), done here instead of with
//! `warp::ws()` so that we choose tungstenite's buffer sizes.
//!
//! Why not `warp::ws()`: warp 0.4 exposes only the message and frame size
//! limits, so every connection got tungstenite's default 128 KiB read buffer
//! and 128 KiB write-coalescing target. The read buffer is allocated per
//! connection and zero-filled up to its capacity on every socket read, which
//! cost ~138 KiB RSS per idle connection and made `memset` the largest item
//! of the server's CPU profile under fan-out. Our frames are small (one Yjs
//! update or awareness change each), so [`socket_config`] uses 4 KiB buffers;
//! bigger frames still arrive whole (the buffer grows to fit one frame, up
//! to `--max-message-bytes`).
//!
//! The handshake is what warp does internally: check the request headers,
//! take hyper's `OnUpgrade` from the request, answer 101 with
//! `sec-websocket-accept`, and once hyper hands over the connection, wrap
//! it in a tokio-tungstenite stream on a spawned task. Connections upgraded
//! here, like warp's, leave hyper's graceful shutdown: the server closes them
//! through their rooms (1001) at shutdown.

use std::convert::Infallible;
use std::future::Future;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// An upgraded WebSocket connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Initial size of each connection's read buffer and the write-coalescing
/// target, in bytes (tungstenite's defaults are 128 KiB each).
pub const SOCKET_BUFFER_BYTES: usize = 4096;

/// The tungstenite settings of every connection: small buffers, and frames
/// or messages over `max_message_bytes` fail with a capacity error (1009).
pub fn socket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// A valid WebSocket upgrade request, ready to be accepted.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Extracts `Some(Upgrade)` when the request is a WebSocket upgrade (GET,
/// `connection: upgrade`, `upgrade: websocket`, `sec-websocket-version: 13`,
/// a `sec-websocket-key`, and a connection hyper can upgrade), else `None`.
///
/// Never rejects, so the route can answer a plain request with a helpful 400.
pub fn request() -> impl Filter<Extract = (Option<Upgrade>,), Error = Infallible> + Clone {
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
        (method == Method::GET && connection_upgrade && upgrade_websocket && version_13).then(
            || Upgrade {
                key: key.clone(),
                on_upgrade,
            },
        )
    }

    /// Answers 101 Switching Protocols and runs `serve` on the upgraded
    /// connection (on its own task) once hyper hands it over.
    pub fn accept<F, Fut>(self, config: WebSocketConfig, serve: F) -> impl Reply
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config));
                    serve(socket.await).await;
                }
                Err(e) => debug!(error = %e, "websocket upgrade failed"),
            }
        });
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
