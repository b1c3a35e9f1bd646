//! Tokens and requests for the auth and edge tests: the server's test
//! secret, tokens minted with the gateway's own signing code, HTTP requests
//! with headers, and WebSocket handshakes whose refusal can be inspected.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use futures_util::StreamExt;
use tandem_gateway::access::Mode;
use tandem_gateway::auth::claims::unix_now;
use tandem_gateway::auth::{Claims, Scope, mint_hs256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::TIMEOUT;

/// The HS256 secret test servers run with ([`auth_flags`]).
pub const SECRET: &str = "tandem-test-secret-0123456789abcdef-0123";

/// `serve` flags turning JWT auth on with [`SECRET`].
pub fn auth_flags() -> Vec<&'static str> {
    vec!["--auth", "jwt", "--auth-secret", SECRET]
}

/// Claims for `docs` (patterns) and `mode`, valid for an hour, issued now.
pub fn claims(docs: &[&str], mode: Mode) -> Claims {
    let now = unix_now();
    Claims {
        sub: "tester".into(),
        docs: Scope::new(docs.iter().map(|d| d.to_string()).collect()).expect("scope"),
        mode,
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        jti: Some(format!("jti-{}", uuid_ish())),
    }
}

fn uuid_ish() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    unix_now() * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// `claims` signed with [`SECRET`].
pub fn sign(claims: &Claims) -> String {
    mint_hs256(SECRET.as_bytes(), claims).expect("mint")
}

/// A signed token for `docs` and `mode`.
pub fn token(docs: &[&str], mode: Mode) -> String {
    sign(&claims(docs, mode))
}

/// An HTTP response: status, raw head (lowercased), body.
#[derive(Debug)]
pub struct Reply {
    /// Status code (0: no response).
    pub status: u16,
    /// Status line and headers, lowercased.
    pub head: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A plain HTTP/1.1 request with extra headers.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let none = Reply {
        status: 0,
        head: String::new(),
        body: Vec::new(),
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, TIMEOUT) else {
        return none;
    };
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() || s.write_all(body).is_err() {
        return none;
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return none;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// How a WebSocket handshake ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Refused before the upgrade with this HTTP status.
    Http(u16),
    /// Upgraded, then refused: the permission-denied reason (if one came
    /// first) and the close code.
    Denied(Option<String>, u16),
    /// Upgraded and served (the socket is dropped).
    Open,
}

/// Opens a WebSocket to `url` with `headers` and reports how it went: for
/// an upgraded socket, reads until the server closes it or sends something
/// that is not an auth message (then it is `Open`).
pub async fn handshake(url: &str, headers: &[(&str, &str)]) -> Handshake {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).expect("header value");
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        request.headers_mut().insert(name, value);
    }
    let connect = tokio_tungstenite::connect_async(request);
    let mut socket = match tokio::time::timeout(TIMEOUT, connect)
        .await
        .expect("connect timed out")
    {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            return Handshake::Http(response.status().as_u16());
        }
        Err(e) => panic!("handshake failed: {e}"),
    };
    let mut reason = None;
    let read = async {
        while let Some(msg) = socket.next().await {
            match msg {
                Ok(Message::Binary(frame)) if frame.first() == Some(&2) => {
                    reason = Some(permission_denied_reason(&frame));
                }
                Ok(Message::Binary(_)) => return None,
                Ok(Message::Close(frame)) => {
                    return Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                }
                Ok(_) => {}
                Err(_) => return Some(1006),
            }
        }
        Some(1006)
    };
    match tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("no answer")
    {
        Some(code) => Handshake::Denied(reason, code),
        None => Handshake::Open,
    }
}

/// The reason of a y-protocols auth *permission denied* frame
/// (`[2, 0, varUint len, utf8...]`; reasons here are under 128 bytes).
fn permission_denied_reason(frame: &[u8]) -> String {
    assert_eq!(
        frame.get(1),
        Some(&0),
        "auth message is not permission-denied"
    );
    let len = usize::from(frame[2]);
    String::from_utf8_lossy(&frame[3..3 + len]).to_string()
}
