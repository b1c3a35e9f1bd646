//! `POST /api/admin/revoke`: add a token, a subject or a document to the
//! denylist. The edge has already checked the caller is a server admin
//! ([`crate::auth::policy`]).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, json, with_status};

use crate::auth::Auth;
use crate::auth::revocation::{RevocationError, Target};

/// Largest revoke request body (it is one small JSON object).
const MAX_BODY: u64 = 4096;

/// The admin routes of the auth module.
pub fn routes(auth: Auth) -> BoxedFilter<(Box<dyn Reply>,)> {
    warp::path!("api" / "admin" / "revoke")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::json::<Target>())
        .then(move |target: Target| revoke(auth.clone(), target))
        .boxed()
}

async fn revoke(auth: Auth, target: Target) -> Box<dyn Reply> {
    let Auth::Jwt { revocations, .. } = auth else {
        return Box::new(with_status(
            "auth is off (--auth none): there are no tokens to revoke",
            StatusCode::CONFLICT,
        ));
    };
    let list = revocations.clone();
    match tokio::task::spawn_blocking(move || list.revoke(target)).await {
        Ok(Ok(entry)) => {
            tracing::info!(revoked = ?entry.target, "revocation stored");
            Box::new(json(&serde_json::json!({
                "revoked": entry,
                "entries": revocations.len(),
            })))
        }
        Ok(Err(e @ (RevocationError::Invalid(_) | RevocationError::Full))) => {
            Box::new(with_status(e.to_string(), StatusCode::UNPROCESSABLE_ENTITY))
        }
        Ok(Err(e)) => Box::new(with_status(
            e.to_string(),
            StatusCode::INTERNAL_SERVER_ERROR,
        )),
        Err(e) => Box::new(with_status(
            e.to_string(),
            StatusCode::INTERNAL_SERVER_ERROR,
        )),
    }
}
