//! What the edge knows about one admitted WebSocket, and when it must end:
//! at the token's `exp` (close 4401) or when a revocation that matches it
//! is made (close 4403).
//!
//! This is the hook for closing live sockets: whoever owns the connection
//! races its serving future against [`Session::ended`] and, when that
//! resolves, closes the socket with the code it returns (the room sees only
//! the [`crate::access::Principal`]; the session stays at the edge).

use std::sync::Arc;
use std::time::Duration;

use tandem_store::DocId;
use tokio::sync::broadcast::error::RecvError;

use crate::access::Principal;
use crate::auth::claims::{Claims, unix_now};
use crate::auth::revocation::Revocations;
use crate::close::CloseCode;

/// An admitted connection's token, for the document it was admitted to.
#[derive(Debug, Clone)]
pub struct Session {
    claims: Claims,
    doc: DocId,
    revocations: Arc<Revocations>,
}

impl Session {
    /// The session of a connection to `doc` admitted with `claims`.
    pub fn new(claims: Claims, doc: DocId, revocations: Arc<Revocations>) -> Session {
        Session {
            claims,
            doc,
            revocations,
        }
    }

    /// Who the room sees.
    pub fn principal(&self) -> Principal {
        Principal {
            sub: self.claims.sub.clone(),
            mode: self.claims.mode,
        }
    }

    /// Resolves when the connection must close: [`CloseCode::Unauthorized`]
    /// at `exp`, [`CloseCode::Forbidden`] at a matching revocation.
    pub async fn ended(&self) -> CloseCode {
        let mut revoked = self.revocations.subscribe();
        // A revocation made between admission and now is in the list already.
        if self.revocations.refuses(&self.claims, Some(&self.doc)) {
            return CloseCode::Forbidden;
        }
        let expiry = tokio::time::sleep(Duration::from_secs(
            self.claims.exp.saturating_sub(unix_now()),
        ));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                _ = &mut expiry => return CloseCode::Unauthorized,
                entry = revoked.recv() => match entry {
                    Ok(entry) if entry.matches(&self.claims, Some(&self.doc)) => return CloseCode::Forbidden,
                    Ok(_) => {}
                    // Missed some: the list itself is the truth.
                    Err(RecvError::Lagged(_)) => {
                        if self.revocations.refuses(&self.claims, Some(&self.doc)) {
                            return CloseCode::Forbidden;
                        }
                    }
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Mode;
    use crate::auth::claims::Scope;
    use crate::auth::revocation::Target;

    fn session(exp_in: u64, dir: &std::path::Path) -> (Session, Arc<Revocations>) {
        let revocations = Arc::new(Revocations::open(dir).expect("open"));
        let claims = Claims {
            sub: "ana".into(),
            docs: Scope::everything(),
            mode: Mode::Read,
            exp: unix_now() + exp_in,
            nbf: None,
            iat: Some(unix_now() - 1),
            jti: Some("t".into()),
        };
        let doc = DocId::new("plan".to_owned()).expect("id");
        (Session::new(claims, doc, revocations.clone()), revocations)
    }

    #[tokio::test]
    async fn a_matching_revocation_ends_it_with_4403_and_others_do_not() {
        let dir = tempfile::tempdir().expect("dir");
        let (s, list) = session(3600, dir.path());
        assert_eq!(s.principal().mode, Mode::Read);
        let ended = tokio::spawn(async move { s.ended().await });
        tokio::task::yield_now().await;
        list.revoke(Target::Doc("other".into())).expect("revoke");
        list.revoke(Target::Sub("bob".into())).expect("revoke");
        list.revoke(Target::Jti("t".into())).expect("revoke");
        let code = tokio::time::timeout(Duration::from_secs(5), ended).await;
        assert_eq!(code.expect("ended").expect("task"), CloseCode::Forbidden);
    }

    #[tokio::test]
    async fn expiry_ends_it_with_4401() {
        let dir = tempfile::tempdir().expect("dir");
        let (s, _list) = session(1, dir.path());
        let code = tokio::time::timeout(Duration::from_secs(5), s.ended()).await;
        assert_eq!(code.expect("ended at exp"), CloseCode::Unauthorized);
    }
}
