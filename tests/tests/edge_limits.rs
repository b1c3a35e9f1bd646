//! Limits at the edge, crossed with the real binary: Origin refusal, CORS,
//! slowloris headers and bodies, the connection caps, the handshake rate,
//! body size and budget, and cleartext HTTP/2 off by default.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tandem_tests::tokens::{Handshake, handshake, http};
use tandem_tests::{TIMEOUT, TestServer};

/// Whether the server closed `s` (EOF or reset) within [`TIMEOUT`]; reads
/// and discards whatever it sent first.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A raw upgrade request's status line code (101, 403, 429 ...).
fn upgrade_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut head = [0u8; 12];
    match s.read_exact(&mut head) {
        Ok(()) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origin_is_refused_with_403_before_the_upgrade() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("notes");
    let own = format!("http://{}", server.addr);
    assert_eq!(
        handshake(&url, &[("origin", "https://evil.example")]).await,
        Handshake::Http(403)
    );
    assert_eq!(
        handshake(&url, &[("origin", "null")]).await,
        Handshake::Http(403)
    );
    assert_eq!(handshake(&url, &[("origin", &own)]).await, Handshake::Open);
    assert_eq!(
        handshake(&url, &[("origin", "http://localhost:5173")]).await,
        Handshake::Open
    );
    assert_eq!(
        handshake(&url, &[]).await,
        Handshake::Open,
        "no Origin: a non-browser client"
    );
    let api = http(
        server.addr,
        "PUT",
        "/api/docs/notes/text",
        &[("origin", "https://evil.example")],
        b"x",
    );
    assert_eq!(api.status, 403);
    assert_eq!(
        server.get_text("/api/docs/notes/text").0,
        404,
        "the refused write stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_cors_headers_and_replace_the_default() {
    let server = TestServer::start(&["--allowed-origins", "https://app.example.com"]);
    let app = [("origin", "https://app.example.com")];
    let put = http(server.addr, "PUT", "/api/docs/notes/text", &app, b"hi");
    assert_eq!(put.status, 204);
    assert!(
        put.head
            .contains("access-control-allow-origin: https://app.example.com"),
        "{}",
        put.head
    );
    let preflight = http(
        server.addr,
        "OPTIONS",
        "/api/docs/notes/text",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ],
        b"",
    );
    assert_eq!(preflight.status, 204);
    assert!(
        preflight.head.contains("access-control-allow-methods"),
        "{}",
        preflight.head
    );
    let url = server.ws_url("notes");
    assert_eq!(handshake(&url, &app).await, Handshake::Open);
    assert_eq!(
        handshake(&url, &[("origin", "http://localhost:5173")]).await,
        Handshake::Http(403)
    );
}

#[test]
fn sockets_sending_headers_one_byte_at_a_time_are_closed() {
    drip_feeders_are_closed(&["--header-read-timeout-ms", "500"]);
}

#[test]
fn with_h2c_on_a_socket_stalling_inside_the_preface_is_closed_too() {
    let server = TestServer::start(&["--header-read-timeout-ms", "500", "--http2-cleartext"]);
    drip_feeders_are_closed(&["--header-read-timeout-ms", "500", "--http2-cleartext"]);
    // Fewer than the 24 bytes protocol detection waits for, then nothing.
    let mut s = TcpStream::connect_timeout(&server.addr, TIMEOUT).expect("connect");
    s.write_all(&H2_PREFACE[..16]).expect("part of the preface");
    let start = Instant::now();
    assert!(
        closed_by_server(&mut s),
        "a socket stalled in protocol detection stayed open"
    );
    assert!(start.elapsed() < TIMEOUT);
}

fn drip_feeders_are_closed(flags: &[&str]) {
    let server = TestServer::start(flags);
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect_timeout(&server.addr, TIMEOUT).expect("connect"))
        .collect();
    // Half drip an HTTP/1.1 request, half the HTTP/2 preface (which must not
    // park a socket in protocol detection either).
    let requests: [&[u8]; 2] = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        H2_PREFACE,
    ];
    let start = Instant::now();
    let mut closed = vec![false; slow.len()];
    let mut sent = 0;
    // Keep dripping bytes; a socket the server closed fails to write or reads EOF.
    while closed.iter().any(|c| !c) {
        assert!(
            start.elapsed() < TIMEOUT,
            "slow sockets still open after {:?}",
            start.elapsed()
        );
        for (i, (s, closed)) in slow.iter_mut().zip(closed.iter_mut()).enumerate() {
            if *closed {
                continue;
            }
            let request = requests[i % 2];
            let byte = request[sent % request.len()];
            *closed = s.write_all(&[byte]).is_err() || peer_closed(s);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Meanwhile and after, ordinary requests are served.
    assert_eq!(server.get("/healthz").0, 200);
}

/// Whether the peer has closed `s` (a non-blocking peek sees EOF or an error).
fn peer_closed(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut buf = [0u8; 1];
    let closed = match s.peek(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    closed
}

#[test]
fn a_stalled_body_is_cut_off_and_nothing_is_stored() {
    let server = TestServer::start(&["--body-read-timeout-ms", "500"]);
    let mut s = TcpStream::connect_timeout(&server.addr, TIMEOUT).expect("connect");
    let head = "PUT /api/docs/stalled/text HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(b"only a little").expect("some body");
    let start = Instant::now();
    assert!(
        closed_by_server(&mut s),
        "the stalled upload was never cut off"
    );
    assert!(start.elapsed() < TIMEOUT);
    assert_eq!(server.get_text("/api/docs/stalled/text").0, 404);
}

/// A connection that has been served one request and stays open (keep-alive),
/// retried until the server admits it.
fn keep_alive_connection(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        let _ = s.set_read_timeout(Some(TIMEOUT));
        let mut buf = [0u8; 12];
        let served = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_ok()
            && s.read_exact(&mut buf).is_ok();
        if served {
            return s;
        }
        assert!(Instant::now() < deadline, "no connection slot came free");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_over_the_cap_are_refused_at_once() {
    let server = TestServer::start(&["--max-connections", "4"]);
    // Each holds a slot: an idle keep-alive connection after one request. (The
    // startup probe's connections may still hold theirs for a moment: retry.)
    let held: Vec<TcpStream> = (0..4).map(|_| keep_alive_connection(server.addr)).collect();
    let mut extra = TcpStream::connect_timeout(&server.addr, TIMEOUT).expect("connect");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let _ = extra.set_read_timeout(Some(TIMEOUT));
    let got = extra.read(&mut buf);
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "the fifth connection was served: {got:?}"
    );
    assert!(start.elapsed() < TIMEOUT / 2, "refused, not queued");
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    while server.get("/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_connection_cap_gets_429_and_others_are_unaffected() {
    let server = TestServer::start(&["--trust-proxy-headers", "--max-connections-per-ip", "2"]);
    let url = server.ws_url("notes");
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let mut open = Vec::new();
    for _ in 0..2 {
        let request = {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut r = url.as_str().into_client_request().expect("request");
            r.headers_mut()
                .insert("x-forwarded-for", "198.51.100.7".parse().expect("value"));
            r
        };
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("admitted");
        open.push(socket);
    }
    assert_eq!(
        handshake(&url, &from("198.51.100.7")).await,
        Handshake::Http(429)
    );
    assert_eq!(
        handshake(&url, &from("10.9.8.7, 198.51.100.8")).await,
        Handshake::Open
    );
    let r = http(server.addr, "GET", "/healthz", &from("198.51.100.7"), b"");
    assert_eq!(r.status, 429, "HTTP requests count against the same cap");
    drop(open);
    let deadline = Instant::now() + TIMEOUT;
    while http(server.addr, "GET", "/healthz", &from("198.51.100.7"), b"").status != 200 {
        assert!(
            Instant::now() < deadline,
            "the address's slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn handshakes_beyond_the_per_address_rate_get_429() {
    let server = TestServer::start(&[
        "--trust-proxy-headers",
        "--max-handshakes-per-ip-per-sec",
        "3",
    ]);
    let from = [("x-forwarded-for", "198.51.100.9")];
    let start = Instant::now();
    let statuses: Vec<u16> = (0..20)
        .map(|_| upgrade_status(server.addr, "/ws/rate", &from))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let accepted = statuses.iter().filter(|&&s| s == 101).count();
    assert!(
        statuses.iter().all(|s| *s == 101 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // A burst of 3, then 3 per second.
    assert!(
        accepted as f64 <= 3.0 + (elapsed * 3.0).ceil(),
        "{accepted} in {elapsed}s"
    );
    assert_eq!(
        upgrade_status(
            server.addr,
            "/ws/rate",
            &[("x-forwarded-for", "198.51.100.10")]
        ),
        101
    );
}

#[test]
fn a_body_over_the_limit_gets_413_and_nothing_is_stored() {
    let server = TestServer::start(&["--max-body-bytes", "1000"]);
    let (status, _) = server.request("PUT", "/api/docs/big/text", &[b'x'; 2000]);
    assert_eq!(status, 413);
    assert_eq!(server.get_text("/api/docs/big/text").0, 404);
    let (status, _) = server.request("PUT", "/api/docs/big/text", &[b'x'; 1000]);
    assert_eq!(status, 204);
}

#[test]
fn uploads_past_the_server_wide_body_budget_get_503_until_it_frees() {
    let server = TestServer::start(&["--body-budget-bytes", "8192", "--max-body-bytes", "8192"]);
    // One upload announces 6 KiB and sends it slowly: the budget holds it.
    let slow_upload = || {
        let mut s = TcpStream::connect_timeout(&server.addr, TIMEOUT).expect("connect");
        let head = "PUT /api/docs/a/text HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6144\r\n\r\n";
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&[b'a'; 1024]).expect("part");
        s
    };
    let mut first = slow_upload();
    let deadline = Instant::now() + TIMEOUT;
    for attempt in 0.. {
        let path = format!("/api/docs/b{attempt}/text");
        let (status, _) = server.request("PUT", &path, &[b'b'; 4096]);
        if status == 503 {
            assert_eq!(
                server.get_text(&path).0,
                404,
                "the refused upload stored nothing"
            );
            break;
        }
        // This upload passed: it may have reached the gate before the slow
        // one, which was then refused (its 503 is already readable). Start
        // the slow one again; otherwise its reservation is not in place yet.
        first.set_nonblocking(true).expect("nonblocking");
        let answered = first.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
        first.set_nonblocking(false).expect("blocking");
        if answered {
            first = slow_upload();
        }
        assert!(
            Instant::now() < deadline,
            "the budget never filled: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.write_all(&[b'a'; 5120]).expect("rest");
    let mut answer = Vec::new();
    let _ = first.set_read_timeout(Some(TIMEOUT));
    let _ = first.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _) = server.request("PUT", "/api/docs/b/text", &[b'b'; 4096]);
    assert_eq!(status, 204, "the budget came back");
}

/// The client connection preface and an empty SETTINGS frame (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn h2_answer(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    s.write_all(H2_PREFACE).expect("preface");
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut answer = vec![0u8; 9];
    match s.read_exact(&mut answer) {
        Ok(()) => answer,
        Err(_) => Vec::new(),
    }
}

#[test]
fn cleartext_http2_is_off_unless_a_flag_enables_it() {
    let server = TestServer::start(&[]);
    let answer = h2_answer(server.addr);
    // A SETTINGS frame is type 4 at byte 3 of the frame header.
    let settings = answer.len() == 9 && answer[3] == 4;
    assert!(!settings, "h2c was accepted: {answer:?}");
    let h2c = TestServer::start(&["--http2-cleartext"]);
    assert_eq!(
        h2_answer(h2c.addr).get(3),
        Some(&4),
        "with --http2-cleartext the server speaks h2"
    );
}
