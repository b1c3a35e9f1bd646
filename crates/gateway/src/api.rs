//! Plain HTTP next to the WebSocket: health, Prometheus metrics, and a small
//! API to list documents and read or write one without a CRDT library.
//!
//! Reads go to the store, which is always at least as new as anything a
//! peer has seen: the room broadcasts an update only after it is durable.
//! Writes go through the document's room (opened if needed), so they are
//! ordered with the peers' edits, stored durably, then broadcast.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use tandem_store::listing::{DEFAULT_PAGE, MAX_PAGE};
use tandem_store::{DocId, Store, StoreHealth};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, with_header, with_status};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, Transact};

use crate::access::Principal;
use crate::backup::Backups;
use crate::inspect::Encoding;
use crate::link::TEXT_ROOT;
use crate::mailbox::Refusal;
use crate::mailbox::{Edit, EditError};
use crate::metrics::Metrics;
use crate::room::Rooms;
use crate::room::root_kind;
use crate::yrs_threads;

/// `?format=v1|v2` on the update endpoints (default v1).
#[derive(Debug, serde::Deserialize)]
struct FormatQuery {
    /// `v1` or `v2`.
    format: Option<String>,
}

impl FormatQuery {
    /// The encoding asked for, or a 400 response.
    fn encoding(&self) -> Result<Encoding, Response> {
        match self.format.as_deref() {
            None | Some("v1") => Ok(Encoding::V1),
            Some("v2") => Ok(Encoding::V2),
            Some(other) => Err(error(
                StatusCode::BAD_REQUEST,
                format!("unknown format '{other}': use v1 or v2"),
            )),
        }
    }
}

type Response = Box<dyn Reply>;

/// `GET|HEAD /healthz`, `GET /metrics`, `GET /api/docs`, `GET /api/backup`,
/// `GET|PUT /api/docs/<id>/text`,
/// `GET|POST /api/docs/<id>/update`.
pub(crate) fn routes(
    store: Store,
    rooms: Rooms,
    metrics: Arc<Metrics>,
) -> BoxedFilter<(Response,)> {
    let max_body = rooms.limits().max_message_bytes as u64;
    let s = store.clone();
    let healthz = warp::path!("healthz")
        .and(warp::get().or(warp::head()).unify())
        .map(move || health(&s));
    let s = store.clone();
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        Box::new(with_header(
            metrics.render(s.commit_stats()),
            "content-type",
            "text/plain; version=0.0.4",
        )) as Response
    });
    let s = store.clone();
    let list = warp::path!("api" / "docs")
        .and(warp::get())
        .and(warp::query::<ListQuery>())
        .then(move |query| list_docs(s.clone(), query));
    let (s, backups) = (store.clone(), Backups::default());
    let backup = warp::path!("api" / "backup")
        .and(warp::get())
        .map(move || backups.start(s.clone()));
    let s = store.clone();
    let text = warp::path!("api" / "docs" / String / "text")
        .and(warp::get())
        .then(move |id| read_doc(s.clone(), id, Format::Text));
    let s = store;
    let update = warp::path!("api" / "docs" / String / "update")
        .and(warp::get())
        .and(warp::query::<FormatQuery>())
        .then(move |id, q: FormatQuery| {
            let s = s.clone();
            async move {
                match q.encoding() {
                    Ok(e) => read_doc(s, id, Format::Update(e)).await,
                    Err(r) => r,
                }
            }
        });
    let r = rooms.clone();
    let put_text = warp::path!("api" / "docs" / String / "text")
        .and(warp::put())
        .and(warp::ext::optional::<Principal>())
        .and(warp::body::content_length_limit(max_body))
        .and(warp::body::bytes())
        .then(move |id, who: Option<Principal>, body: Bytes| {
            let rooms = r.clone();
            async move {
                match String::from_utf8(body.to_vec()) {
                    Ok(text) => write_doc(rooms, id, who, Edit::ReplaceText(text)).await,
                    Err(_) => error(StatusCode::BAD_REQUEST, "body is not UTF-8 text"),
                }
            }
        });
    let r = rooms;
    let post_update = warp::path!("api" / "docs" / String / "update")
        .and(warp::post())
        .and(warp::query::<FormatQuery>())
        .and(warp::ext::optional::<Principal>())
        .and(warp::body::content_length_limit(max_body))
        .and(warp::body::bytes())
        .then(
            move |id, q: FormatQuery, who: Option<Principal>, bytes: Bytes| {
                let rooms = r.clone();
                async move {
                    match q.encoding() {
                        Ok(encoding) => {
                            write_doc(rooms, id, who, Edit::Update { bytes, encoding }).await
                        }
                        Err(r) => r,
                    }
                }
            },
        );
    healthz
        .or(metrics)
        .unify()
        .or(list)
        .unify()
        .or(backup)
        .unify()
        .or(text)
        .unify()
        .or(update)
        .unify()
        .or(put_text)
        .unify()
        .or(post_update)
        .unify()
        .boxed()
}

/// `GET|HEAD /healthz`: 200 `ok` while the store can write, else 503 with
/// the reason (so a load balancer stops routing here until the store has
/// recovered by itself). Cheap: one mutex, no I/O.
fn health(store: &Store) -> Response {
    match store.health() {
        StoreHealth::Writable => Box::new("ok"),
        StoreHealth::Failing { reason, since } => {
            let secs = since.elapsed().map_or(0, |d| d.as_secs());
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store cannot write (for {secs} s): {reason}\n"),
            )
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    Box::new(with_status(message.into(), status))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tandem_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `?limit=&after=&prefix=` of `GET /api/docs`.
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    /// Page size, 1..=`MAX_PAGE` (default `DEFAULT_PAGE`).
    limit: Option<usize>,
    /// Cursor: list ids strictly after this one (the `next` of a page).
    after: Option<String>,
    /// Only ids starting with this.
    prefix: Option<String>,
}

/// `GET /api/docs`: one page of documents in id order, as a JSON array;
/// when more follow, a `Link: <...>; rel="next"` header (RFC 8288) carries
/// the next page's URL. Costs O(page) whatever the number of documents.
async fn list_docs(store: Store, query: ListQuery) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1..={MAX_PAGE} (default {DEFAULT_PAGE})"),
        );
    }
    let after = match query.after.map(DocId::new).transpose() {
        Ok(after) => after,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("after: {e}")),
    };
    let prefix = query.prefix.unwrap_or_default();
    if !prefix.is_empty()
        && let Err(e) = DocId::new(prefix.as_str())
    {
        return error(StatusCode::BAD_REQUEST, format!("prefix: {e}"));
    }
    let p = prefix.clone();
    let page = match blocking(move || store.list_page(&p, after.as_ref(), limit)).await {
        Ok(page) => page,
        Err(r) => return r,
    };
    let rows: Vec<_> = page
        .docs
        .iter()
        .map(|d| {
            let modified = d
                .last_modified
                .duration_since(UNIX_EPOCH)
                .map(|t| t.as_millis() as u64)
                .unwrap_or(0);
            serde_json::json!({
                "id": d.id.as_str(),
                "size_bytes": d.size_bytes,
                "update_count": d.update_count,
                "log_len": d.log_len,
                "last_modified_ms": modified,
            })
        })
        .collect();
    let json = warp::reply::json(&rows);
    match page.next {
        // Ids and prefixes are URL-safe (their alphabet needs no escaping).
        Some(next) => Box::new(with_header(
            json,
            "link",
            format!("</api/docs?limit={limit}&after={next}&prefix={prefix}>; rel=\"next\""),
        )),
        None => Box::new(json),
    }
}

/// Applies an edit through the room, so connected peers see it at once.
///
/// `who` is the principal the edge admitted (the room applies the same
/// read-only rule as for peers); routes served without the edge (tests
/// driving `routes` directly) act as the server itself.
async fn write_doc(rooms: Rooms, id: String, who: Option<Principal>, edit: Edit) -> Response {
    let doc = match DocId::new(id) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let who = who.unwrap_or_else(Principal::server);
    match rooms.edit(&doc, who, edit).await {
        Ok(()) => Box::new(StatusCode::NO_CONTENT),
        Err(e) => error(edit_status(&e), e.to_string()),
    }
}

/// The HTTP status of a refused edit.
fn edit_status(e: &EditError) -> StatusCode {
    match e {
        EditError::Refused(Refusal::DocTooLarge { .. } | Refusal::TooManyItems { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        EditError::Refused(Refusal::NotText(_)) => StatusCode::CONFLICT,
        EditError::Refused(_) => StatusCode::BAD_REQUEST,
        EditError::ReadOnly => StatusCode::FORBIDDEN,
        EditError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        EditError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What the document endpoints read.
enum Format {
    /// The root text.
    Text,
    /// The whole document as one update in this encoding.
    Update(Encoding),
}

async fn read_doc(store: Store, id: String, format: Format) -> Response {
    let doc = match DocId::new(id) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (s, d) = (store.clone(), doc.clone());
    match blocking(move || s.info(&d)).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no document '{}'", doc.as_str()),
            );
        }
        Err(r) => return r,
    }
    let content_type = match &format {
        Format::Text => "text/plain; charset=utf-8",
        Format::Update(_) => "application/octet-stream",
    };
    // Loading and encoding are yrs work: on a yrs thread.
    let read = yrs_threads::run(move || -> Result<Result<Vec<u8>, Response>, String> {
        match format {
            Format::Text => {
                let ydoc = store.load(&doc).map_err(|e| e.to_string())?;
                if let Some(kind) = root_kind(&ydoc).filter(|k| *k != "text") {
                    return Ok(Err(error(
                        StatusCode::CONFLICT,
                        format!("the document's root '{TEXT_ROOT}' is a {kind}, not text"),
                    )));
                }
                let text = ydoc.get_or_insert_text(TEXT_ROOT);
                Ok(Ok(text.get_string(&ydoc.transact()).into_bytes()))
            }
            Format::Update(encoding) => {
                let v1 = store.export(&doc).map_err(|e| e.to_string())?;
                Ok(Ok(match encoding {
                    Encoding::V1 => v1,
                    Encoding::V2 => yrs::Update::decode_v1(&v1)
                        .map_err(|e| e.to_string())?
                        .encode_v2(),
                }))
            }
        }
    });
    match read.await {
        Ok(Ok(Ok(bytes))) => Box::new(with_header(bytes, "content-type", content_type)),
        Ok(Ok(Err(response))) => response,
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
