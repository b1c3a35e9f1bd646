//! Tokens at the edge, against the real binary: who may open which
//! document's WebSocket, which HTTP routes need what, revocation, and that
//! tokens never reach the log.

use std::process::Command;

use tandem_gateway::access::Mode;
use tandem_gateway::auth::claims::unix_now;
use tandem_gateway::auth::mint_pem;
use tandem_gateway::auth::token::Algorithm;
use tandem_tests::server::tandem_bin;
use tandem_tests::tokens::{Handshake, SECRET, auth_flags, claims, handshake, http, sign, token};
use tandem_tests::{Peer, TestServer};

fn jwt_server() -> TestServer {
    TestServer::start(&auth_flags())
}

fn ws(server: &TestServer, doc: &str, token: &str) -> String {
    format!("{}?token={token}", server.ws_url(doc))
}

/// Expects permission denied (a reason) then `code`.
async fn assert_refused(url: &str, code: u16) -> String {
    match handshake(url, &[]).await {
        Handshake::Denied(Some(reason), got) if got == code => reason,
        other => panic!("expected permission denied + {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_without_a_valid_token_gets_permission_denied_then_4401() {
    let server = jwt_server();
    let base = server.ws_url("notes");
    let reason = assert_refused(&base, 4401).await;
    assert!(reason.contains("no token"), "{reason}");
    let malformed = assert_refused(&format!("{base}?token=not-a-jwt"), 4401).await;
    assert!(malformed.contains("invalid token"), "{malformed}");

    let mut other = claims(&["*"], Mode::Write);
    other.sub = "mallory".into();
    let forged = tandem_gateway::auth::mint_hs256(b"some-other-secret-of-enough-length!!", &other)
        .expect("mint");
    let bad_sig = assert_refused(&ws(&server, "notes", &forged), 4401).await;
    assert!(bad_sig.contains("bad signature"), "{bad_sig}");

    // alg "none": header {"alg":"none","typ":"JWT"}, admin claims, no signature.
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        "eyJzdWIiOiJhbmEiLCJkb2NzIjpbIioiXSwibW9kZSI6ImFkbWluIiwiZXhwIjo0MTAyNDQ0ODAwfQ"
    );
    assert_refused(&ws(&server, "notes", &none), 4401).await;

    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/auth/es256-private.pem"
    ))
    .expect("fixture key");
    let es256 = mint_pem(Algorithm::ES256, &pem, &claims(&["*"], Mode::Write)).expect("mint");
    let wrong_alg = assert_refused(&ws(&server, "notes", &es256), 4401).await;
    assert!(wrong_alg.contains("algorithm"), "{wrong_alg}");

    let mut expired = claims(&["*"], Mode::Write);
    expired.exp = unix_now() - 60;
    let reason = assert_refused(&ws(&server, "notes", &sign(&expired)), 4401).await;
    assert!(reason.contains("expired"), "{reason}");

    let mut early = claims(&["*"], Mode::Write);
    early.nbf = Some(unix_now() + 600);
    let reason = assert_refused(&ws(&server, "notes", &sign(&early)), 4401).await;
    assert!(reason.contains("not yet valid"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_outside_the_scope_gets_4403_and_prefix_scopes_admit_their_ids() {
    let server = jwt_server();
    let team_a = token(&["team-a.*"], Mode::Write);
    let reason = assert_refused(&ws(&server, "team-b.plan", &team_a), 4403).await;
    assert!(reason.contains("does not admit"), "{reason}");
    assert_refused(&ws(&server, "team-a", &team_a), 4403).await;
    let exact = token(&["notes"], Mode::Write);
    assert_refused(&ws(&server, "notes2", &exact), 4403).await;

    let a = Peer::join(&ws(&server, "team-a.plan", &team_a)).await;
    let b = Peer::join(&ws(&server, "team-a.plan", &token(&["*"], Mode::Write))).await;
    a.insert(0, "hello");
    b.wait_text("hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_header_works_on_the_upgrade() {
    let server = jwt_server();
    let bearer = format!("Bearer {}", token(&["notes"], Mode::Write));
    let open = handshake(&server.ws_url("notes"), &[("authorization", &bearer)]).await;
    assert_eq!(open, Handshake::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_joins_and_receives_the_document_and_live_updates() {
    let server = jwt_server();
    let writer = Peer::join(&ws(&server, "shared", &token(&["shared"], Mode::Write))).await;
    writer.insert(0, "before");
    let reader = Peer::join(&ws(&server, "shared", &token(&["shared"], Mode::Read))).await;
    reader.wait_text("before").await;
    writer.insert(6, " and after");
    reader.wait_text("before and after").await;
}

#[test]
fn http_routes_need_their_token_and_mode() {
    let server = jwt_server();
    let addr = server.addr;
    let bearer = |t: &str| format!("Bearer {t}");
    let (read, write, admin) = (
        bearer(&token(&["notes"], Mode::Read)),
        bearer(&token(&["notes"], Mode::Write)),
        bearer(&token(&["*"], Mode::Admin)),
    );
    let scoped_admin = bearer(&token(&["notes"], Mode::Admin));

    assert_eq!(http(addr, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(
        http(addr, "GET", "/", &[], b"").status / 100,
        2,
        "editor page is open"
    );

    let anonymous = http(addr, "PUT", "/api/docs/notes/text", &[], b"wipe");
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.head.contains("www-authenticate: bearer"),
        "{}",
        anonymous.head
    );
    let garbage = http(
        addr,
        "GET",
        "/api/docs/notes/text",
        &[("authorization", "Bearer x.y.z")],
        b"",
    );
    assert_eq!(garbage.status, 401);

    let put = |auth: &str, body: &[u8]| {
        http(
            addr,
            "PUT",
            "/api/docs/notes/text",
            &[("authorization", auth)],
            body,
        )
        .status
    };
    assert_eq!(put(&read, b"read-only"), 403);
    assert_eq!(put(&write, b"written"), 204);
    let get = http(
        addr,
        "GET",
        "/api/docs/notes/text",
        &[("authorization", &read)],
        b"",
    );
    assert_eq!((get.status, get.text()), (200, "written".to_string()));
    let other_doc = http(
        addr,
        "GET",
        "/api/docs/secret/text",
        &[("authorization", &read)],
        b"",
    );
    assert_eq!(other_doc.status, 403);
    let query = format!(
        "/api/docs/notes/text?token={}",
        token(&["notes"], Mode::Read)
    );
    assert_eq!(http(addr, "GET", &query, &[], b"").status, 200);

    for path in ["/api/docs", "/metrics"] {
        for (who, auth) in [
            ("read", &read),
            ("write", &write),
            ("scoped admin", &scoped_admin),
        ] {
            let status = http(addr, "GET", path, &[("authorization", auth)], b"").status;
            assert_eq!(status, 403, "{path} with a {who} token");
        }
        assert_eq!(
            http(addr, "GET", path, &[], b"").status,
            401,
            "{path} without a token"
        );
        let ok = http(addr, "GET", path, &[("authorization", &admin)], b"");
        assert_eq!(ok.status, 200, "{path} with an admin token");
    }
    let listing = http(addr, "GET", "/api/docs", &[("authorization", &admin)], b"");
    assert!(listing.text().contains("notes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_refuses_it_from_then_on_and_survives_a_restart() {
    let mut server = jwt_server();
    let admin = format!("Bearer {}", token(&["*"], Mode::Admin));
    let ana = claims(&["*"], Mode::Write);
    let ana_jti = ana.jti.clone().expect("jti");
    let ana_token = sign(&ana);
    let mut bob = claims(&["*"], Mode::Write);
    bob.sub = "bob".into();
    let bob_token = sign(&bob);
    assert_eq!(
        handshake(&ws(&server, "doc", &ana_token), &[]).await,
        Handshake::Open
    );

    let by_writer = http(
        server.addr,
        "POST",
        "/api/admin/revoke",
        &[
            ("authorization", &format!("Bearer {ana_token}")),
            ("content-type", "application/json"),
        ],
        format!("{{\"jti\":\"{ana_jti}\"}}").as_bytes(),
    );
    assert_eq!(by_writer.status, 403, "only admins revoke");

    let revoke = |body: String, addr| {
        http(
            addr,
            "POST",
            "/api/admin/revoke",
            &[
                ("authorization", &admin),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let r = revoke(format!("{{\"jti\":\"{ana_jti}\"}}"), server.addr);
    assert_eq!(r.status, 200, "{}", r.text());
    let reason = assert_refused(&ws(&server, "doc", &ana_token), 4403).await;
    assert!(reason.contains("revoked"), "{reason}");
    assert_eq!(
        handshake(&ws(&server, "doc", &bob_token), &[]).await,
        Handshake::Open
    );
    assert_eq!(
        revoke("{\"doc\":\"not/an/id\"}".into(), server.addr).status,
        422
    );
    assert_eq!(revoke("{\"jti\":\"\"}".into(), server.addr).status, 422);
    assert_eq!(revoke("{\"sub\":\"bob\"}".into(), server.addr).status, 200);
    assert_refused(&ws(&server, "doc", &bob_token), 4403).await;
    let bearer_bob = format!("Bearer {bob_token}");
    let http_bob = http(
        server.addr,
        "GET",
        "/api/docs/doc/text",
        &[("authorization", &bearer_bob)],
        b"",
    );
    assert_eq!(http_bob.status, 403);

    server.sigterm();
    server.restart();
    assert_refused(&ws(&server, "doc", &ana_token), 4403).await;
    assert_refused(&ws(&server, "doc", &bob_token), 4403).await;
    let fresh = token(&["*"], Mode::Write);
    assert_eq!(
        handshake(&ws(&server, "doc", &fresh), &[]).await,
        Handshake::Open
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_document_refuses_older_tokens_for_it_only() {
    let server = jwt_server();
    let admin = format!("Bearer {}", token(&["*"], Mode::Admin));
    let mut old = claims(&["*"], Mode::Write);
    old.iat = Some(unix_now() - 10);
    let old = sign(&old);
    let r = http(
        server.addr,
        "POST",
        "/api/admin/revoke",
        &[("authorization", &admin)],
        b"{\"doc\":\"plan\"}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_refused(&ws(&server, "plan", &old), 4403).await;
    assert_eq!(
        handshake(&ws(&server, "other", &old), &[]).await,
        Handshake::Open
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    let server = jwt_server();
    let good = token(&["notes"], Mode::Write);
    let bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ";
    let _ = handshake(&ws(&server, "notes", &good), &[]).await;
    let _ = handshake(&ws(&server, "notes", bad), &[]).await;
    let _ = http(
        server.addr,
        "GET",
        &format!("/api/docs/notes/text?token={good}"),
        &[],
        b"",
    );
    let _ = http(
        server.addr,
        "GET",
        "/api/docs/notes/text",
        &[("authorization", &format!("Bearer {bad}"))],
        b"",
    );
    let log = server.log();
    assert!(
        log.contains("token=REDACTED"),
        "access lines are logged (redacted):\n{log}"
    );
    let signature = good.rsplit('.').next().expect("signature");
    assert!(
        !log.contains(signature),
        "a token leaked into the log:\n{log}"
    );
    assert!(
        !log.contains("c2VjcmV0LXNpZ25hdHVyZQ"),
        "a token leaked into the log:\n{log}"
    );
}

#[test]
fn a_network_address_without_auth_refuses_to_start_and_says_how_to_fix_it() {
    let data = tempfile::tempdir().expect("dir");
    let out = Command::new(tandem_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .env_remove("TANDEM_AUTH")
        .output()
        .expect("run tandem");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth jwt") && err.contains("--auth none"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tandem_token_mints_a_token_the_server_accepts_and_prints_a_link() {
    let server = jwt_server();
    let out = Command::new(tandem_bin())
        .args([
            "token", "--doc", "notes", "--mode", "write", "--ttl", "1h", "--sub", "ana",
        ])
        .args(["--url", &format!("http://{}", server.addr)])
        .env("TANDEM_AUTH_SECRET", SECRET)
        .output()
        .expect("run tandem token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let token = lines.next().expect("token line").to_owned();
    let link = lines.next().expect("link line");
    assert_eq!(
        link,
        format!("http://{}/d/notes?token={token}", server.addr)
    );
    assert_eq!(
        handshake(&ws(&server, "notes", &token), &[]).await,
        Handshake::Open
    );
    assert_refused(&ws(&server, "other", &token), 4403).await;
    assert!(
        server.log().contains("sub=ana"),
        "the admission names the subject"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_server_accepts_its_algorithm_only() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/auth/");
    let public = format!("{fixtures}es256-public.pem");
    let server = TestServer::start(&["--auth", "jwt", "--auth-public-key", &public]);
    let private = std::fs::read(format!("{fixtures}es256-private.pem")).expect("fixture key");
    let es256 =
        mint_pem(Algorithm::ES256, &private, &claims(&["notes"], Mode::Write)).expect("mint");
    assert_eq!(
        handshake(&ws(&server, "notes", &es256), &[]).await,
        Handshake::Open
    );
    // HS256 with the public key's bytes as the secret: the classic algorithm confusion.
    let pem = std::fs::read(&public).expect("public key");
    let confused =
        tandem_gateway::auth::mint_hs256(&pem, &claims(&["notes"], Mode::Write)).expect("mint");
    let reason = assert_refused(&ws(&server, "notes", &confused), 4401).await;
    assert!(reason.contains("algorithm"), "{reason}");
    assert_refused(&ws(&server, "notes", &token(&["notes"], Mode::Write)), 4401).await;
}
