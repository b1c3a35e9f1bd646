//! Authentication and authorization at the edge: who a request or a
//! connection acts as, and whether it may do what it asks. The room never
//! sees a token, only the [`Principal`] made here.
//!
//! Modules, in dependency order:
//! - [`claims`]: the token's claims and the `docs` [`Scope`] (exact ids,
//!   `team-a.*` prefixes, `*`).
//! - [`token`]: verifying JWTs (one configured algorithm only) and signing
//!   them (`tandem token`, tests).
//! - [`revocation`]: the persisted denylist and its live-revocation hook.
//! - [`session`]: an admitted WebSocket's token, and when it must end (at
//!   `exp`: 4401; at a matching revocation: 4403).
//! - [`policy`]: the route table: what each route needs.
//! - [`args`]: the `tandem serve` flags (`--auth`, `--auth-secret`, ...).
//! - [`admin`]: `POST /api/admin/revoke`.
//!
//! [`Auth::admit`] is the one check every route goes through.

pub mod admin;
pub mod args;
pub mod claims;
pub mod policy;
pub mod revocation;
pub mod session;
pub mod token;

use std::sync::Arc;

use tandem_store::DocId;
use warp::http::{HeaderMap, StatusCode, Uri, header};

use crate::access::{Mode, Principal};
use crate::close::CloseCode;

pub use args::{AuthArgs, AuthMode, SecretArgs};
pub use claims::{Claims, Scope};
pub use policy::Need;
pub use revocation::{Revocation, Revocations, Target};
pub use session::Session;
pub use token::{TokenError, Verifier, mint_hs256, mint_pem};

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `--auth none`: every caller is [`Principal::anonymous`].
    Off,
    /// `--auth jwt`: a token verified with one key and algorithm.
    Jwt {
        /// The key and the accepted algorithm.
        verifier: Arc<Verifier>,
        /// Tokens refused before their `exp`.
        revocations: Arc<Revocations>,
    },
}

/// Why a request or connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No valid token: HTTP 401, WebSocket 4401.
    #[error("{0}")]
    Unauthorized(TokenError),
    /// A valid token that does not allow this: HTTP 403, WebSocket 4403.
    #[error("{0}")]
    Forbidden(&'static str),
}

impl Denial {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Denial::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The WebSocket close code.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Denial::Unauthorized(_) => CloseCode::Unauthorized,
            Denial::Forbidden(_) => CloseCode::Forbidden,
        }
    }
}

impl Auth {
    /// Whether tokens are checked.
    pub fn is_on(&self) -> bool {
        matches!(self, Auth::Jwt { .. })
    }

    /// The principal `token` acts as, if it may do what `need` says.
    pub fn admit(&self, token: Option<&str>, need: &Need) -> Result<Principal, Denial> {
        self.check(token, need).map(|(principal, _)| principal)
    }

    /// Admits a WebSocket to document `id` (`read` at least): its principal,
    /// and with auth on its [`Session`] (when it must end: see [`session`]).
    pub fn admit_websocket(
        &self,
        token: Option<&str>,
        id: &str,
    ) -> Result<(Principal, Option<Session>), Denial> {
        let (principal, claims) = self.check(token, &Need::Doc(id.to_owned(), Mode::Read))?;
        let session = match (self, claims, DocId::new(id.to_owned())) {
            (Auth::Jwt { revocations, .. }, Some(claims), Ok(doc)) => {
                Some(Session::new(claims, doc, revocations.clone()))
            }
            _ => None,
        };
        Ok((principal, session))
    }

    fn check(
        &self,
        token: Option<&str>,
        need: &Need,
    ) -> Result<(Principal, Option<Claims>), Denial> {
        let (verifier, revocations) = match self {
            Auth::Off => return Ok((Principal::anonymous(), None)),
            Auth::Jwt {
                verifier,
                revocations,
            } => (verifier, revocations),
        };
        if *need == Need::Open {
            return Ok((Principal::anonymous(), None));
        }
        let token = token.ok_or(Denial::Unauthorized(TokenError::Missing))?;
        let claims = verifier.verify(token).map_err(Denial::Unauthorized)?;
        let principal = Principal {
            sub: claims.sub.clone(),
            mode: claims.mode,
        };
        let doc = match need {
            Need::Open => None,
            Need::ServerAdmin => {
                if claims.mode < Mode::Admin || !claims.docs.is_everything() {
                    return Err(Denial::Forbidden(
                        "this needs an admin token for every document (mode admin, docs [\"*\"])",
                    ));
                }
                None
            }
            Need::Doc(id, mode) => {
                let doc = DocId::new(id.clone())
                    .map_err(|_| Denial::Forbidden("the token does not admit this document"))?;
                if !claims.docs.admits(&doc) {
                    return Err(Denial::Forbidden("the token does not admit this document"));
                }
                if claims.mode < *mode {
                    return Err(Denial::Forbidden(match mode {
                        Mode::Write => "read-only token: this needs mode write",
                        _ => "this needs mode admin",
                    }));
                }
                Some(doc)
            }
        };
        if revocations.refuses(&claims, doc.as_ref()) {
            return Err(Denial::Forbidden("token revoked"));
        }
        Ok((principal, Some(claims)))
    }
}

/// The token a request carries: `Authorization: Bearer ...`, else the
/// `token` query parameter (what y-websocket's `params` sends).
pub fn request_token<'r>(headers: &'r HeaderMap, uri: &'r Uri) -> Option<&'r str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer.or_else(|| {
        uri.query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    })
}

/// `uri` as it may be logged: the value of `token=` replaced by `REDACTED`.
pub fn redacted(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("token") => format!("{name}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::unix_now;
    use warp::http::HeaderValue;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        let auth = Auth::Jwt {
            verifier: Arc::new(Verifier::hs256(SECRET).expect("key")),
            revocations: Arc::new(Revocations::open(dir.path()).expect("open")),
        };
        (auth, dir)
    }

    fn token(docs: &[&str], mode: Mode) -> String {
        let claims = Claims {
            sub: "ana".into(),
            docs: Scope::new(docs.iter().map(|d| d.to_string()).collect()).expect("scope"),
            mode,
            exp: unix_now() + 60,
            nbf: None,
            iat: Some(unix_now()),
            jti: Some("j1".into()),
        };
        mint_hs256(SECRET, &claims).expect("mint")
    }

    fn doc(id: &str, mode: Mode) -> Need {
        Need::Doc(id.to_owned(), mode)
    }

    #[test]
    fn scope_and_mode_decide() {
        let (auth, _dir) = auth();
        let reader = token(&["team-a.*"], Mode::Read);
        let p = auth
            .admit(Some(&reader), &doc("team-a.x", Mode::Read))
            .expect("admitted");
        assert_eq!(
            p,
            Principal {
                sub: "ana".into(),
                mode: Mode::Read
            }
        );
        let out = auth.admit(Some(&reader), &doc("team-b.x", Mode::Read));
        assert_eq!(out.map_err(|d| d.status()), Err(StatusCode::FORBIDDEN));
        let write = auth.admit(Some(&reader), &doc("team-a.x", Mode::Write));
        assert_eq!(write.map_err(|d| d.status()), Err(StatusCode::FORBIDDEN));
        let none = auth.admit(None, &doc("team-a.x", Mode::Read));
        assert_eq!(none, Err(Denial::Unauthorized(TokenError::Missing)));
    }

    #[test]
    fn server_admin_needs_admin_for_everything() {
        let (auth, _dir) = auth();
        assert!(
            auth.admit(Some(&token(&["*"], Mode::Admin)), &Need::ServerAdmin)
                .is_ok()
        );
        assert!(
            auth.admit(Some(&token(&["a.*"], Mode::Admin)), &Need::ServerAdmin)
                .is_err()
        );
        assert!(
            auth.admit(Some(&token(&["*"], Mode::Write)), &Need::ServerAdmin)
                .is_err()
        );
    }

    #[test]
    fn revoked_tokens_are_forbidden() {
        let (auth, _dir) = auth();
        let t = token(&["*"], Mode::Write);
        let Auth::Jwt { revocations, .. } = &auth else {
            unreachable!()
        };
        revocations
            .revoke(Target::Jti("j1".into()))
            .expect("revoke");
        let denied = auth.admit(Some(&t), &doc("x", Mode::Read));
        assert_eq!(denied, Err(Denial::Forbidden("token revoked")));
    }

    #[test]
    fn token_comes_from_bearer_or_query() {
        let uri: Uri = "/ws/x?a=1&token=abc.def.ghi".parse().expect("uri");
        assert_eq!(request_token(&HeaderMap::new(), &uri), Some("abc.def.ghi"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(request_token(&headers, &uri), Some("xyz"));
        let plain: Uri = "/ws/x".parse().expect("uri");
        assert_eq!(request_token(&HeaderMap::new(), &plain), None);
    }

    #[test]
    fn tokens_are_redacted_from_logged_uris() {
        let uri: Uri = "/ws/x?a=1&token=secret.jwt.value&b=2".parse().expect("uri");
        let shown = redacted(&uri);
        assert_eq!(shown, "/ws/x?a=1&token=REDACTED&b=2");
        assert!(!shown.contains("secret"));
    }
}
