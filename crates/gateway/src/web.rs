//! The browser editor's static files, embedded into the binary at build time.
//!
//! `build.rs` turns `web/dist` (built by `just web`) into a table of files compiled
//! into the binary, so `tandem serve` serves the editor from wherever it runs, with
//! no files to deploy next to it. Routes:
//!
//! - `GET /` — the start page (`index.html`);
//! - `GET /d/<doc-id>` — the editor (`editor.html`; the page reads the id from its URL);
//! - `GET /assets/<file>` — scripts and styles. Their names carry a content hash, so
//!   browsers may cache them forever; the pages themselves are revalidated (`no-cache`
//!   plus an ETag). A gzip variant is sent when the browser accepts it.
//!
//! A binary built without `web/dist` (no Node on the build machine) answers `/` and
//! `/d/...` with a short page saying how to build the editor.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{Response, StatusCode, header};

/// One embedded file of `web/dist`.
struct Asset {
    /// Path inside `web/dist`, `/`-separated (`index.html`, `assets/editor-XXXX.js`).
    path: &'static str,
    /// The file's bytes.
    body: &'static [u8],
    /// Quoted content hash, for `ETag` / `If-None-Match` revalidation.
    etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Long-lived caching for content-hashed assets: a new build gets new names.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages (and unhashed files) are revalidated on every load, cheaply via ETag.
const REVALIDATE: &str = "no-cache";

/// Shown at `/` and `/d/...` when the binary was built without the editor bundle.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Tandem</title></head>\
<body style=\"font:16px/1.6 system-ui,sans-serif;max-width:36em;margin:12vh auto;padding:0 1em;color:#1f2328\">\
<h1>Tandem is running</h1><p>The WebSocket endpoint is up at <code>/ws/&lt;doc-id&gt;</code>, \
but this binary was built without the browser editor.</p><p>To include it, build the editor \
(needs Node.js and npm) and then the binary again:</p>\
<pre style=\"background:#f1f0ec;padding:12px 16px;border-radius:8px\">just web\ncargo build --release -p tandem</pre>\
</body></html>";

/// Routes serving the editor: `GET /`, `GET /d/<doc-id>` and the bundle's assets.
pub(crate) fn routes() -> BoxedFilter<(Box<dyn warp::Reply>,)> {
    let start_page = warp::path::end().map(|| Page::Start);
    let editor_page = warp::path("d")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .map(|_doc: String| Page::Editor);
    let pages = start_page
        .or(editor_page)
        .unify()
        .and(request_headers())
        .map(|page: Page, headers: RequestHeaders| serve_page(page, &headers));

    let assets = warp::path("assets")
        .and(warp::path::tail())
        .and(request_headers())
        .and_then(
            |tail: warp::path::Tail, headers: RequestHeaders| async move {
                let path = format!("assets/{}", tail.as_str());
                serve_asset(&path, &headers).ok_or_else(warp::reject::not_found)
            },
        );

    warp::get()
        .or(warp::head())
        .unify()
        .and(pages.or(assets).unify())
        .boxed()
}

/// The two HTML pages.
#[derive(Clone, Copy)]
enum Page {
    Start,
    Editor,
}

/// The request headers that shape a static response.
struct RequestHeaders {
    /// `If-None-Match`: the ETag the browser already has.
    if_none_match: Option<String>,
    /// Whether `Accept-Encoding` lists gzip.
    accepts_gzip: bool,
}

fn request_headers() -> impl Filter<Extract = (RequestHeaders,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("if-none-match")
        .and(warp::header::optional::<String>("accept-encoding"))
        .map(
            |if_none_match, accept_encoding: Option<String>| RequestHeaders {
                if_none_match,
                accepts_gzip: accept_encoding.is_some_and(|v| accepts_gzip(&v)),
            },
        )
}

fn serve_page(page: Page, headers: &RequestHeaders) -> Box<dyn warp::Reply> {
    let file = match page {
        Page::Start => "index.html",
        Page::Editor => "editor.html",
    };
    if let Some(reply) = serve_asset(file, headers) {
        return reply;
    }
    let status = match page {
        Page::Start => StatusCode::OK,
        Page::Editor => StatusCode::SERVICE_UNAVAILABLE,
    };
    Box::new(warp::reply::with_status(
        warp::reply::html(NOT_BUILT),
        status,
    ))
}

/// The embedded file at `path`, or `None` if there is no such file.
fn serve_asset(path: &str, headers: &RequestHeaders) -> Option<Box<dyn warp::Reply>> {
    // Precompressed variants are served in place of their original, never by name.
    if path.ends_with(".gz") {
        return None;
    }
    let asset = find(path)?;
    let gzipped = headers
        .accepts_gzip
        .then(|| find(&format!("{path}.gz")))
        .flatten();
    let body = gzipped.unwrap_or(asset);
    let cache = if is_content_hashed(path) {
        IMMUTABLE
    } else {
        REVALIDATE
    };

    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, content_type(path))
        .header(header::CACHE_CONTROL, cache)
        .header(header::ETAG, body.etag)
        .header(header::VARY, "Accept-Encoding")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if gzipped.is_some() {
        response = response.header(header::CONTENT_ENCODING, "gzip");
    }
    let not_modified = headers
        .if_none_match
        .as_deref()
        .is_some_and(|tags| etag_matches(tags, body.etag));
    let reply = if not_modified {
        response.status(StatusCode::NOT_MODIFIED).body(&[][..])
    } else {
        response.body(body.body)
    };
    // The builder only fails on invalid header values, and ours are all static.
    Some(match reply {
        Ok(reply) => Box::new(reply),
        Err(_) => Box::new(StatusCode::INTERNAL_SERVER_ERROR),
    })
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// True if the browser accepts gzip (`Accept-Encoding: gzip, deflate, br` and the like).
fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|coding| {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// True if `If-None-Match` lists `etag` (or is `*`).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// Names like `editor-4NEZIP62.js`: esbuild's `[name]-[hash]` with an 8-char hash.
fn is_content_hashed(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() == 8
            && hash
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_recognised() {
        assert!(is_content_hashed("assets/editor-4NEZIP62.js"));
        assert!(is_content_hashed("assets/style-I2KMD4WE.css"));
        assert!(!is_content_hashed("index.html"));
        assert!(!is_content_hashed("assets/my-file.js"));
    }

    #[test]
    fn gzip_acceptance_honours_q_zero() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0, br"));
        assert!(!accepts_gzip("identity"));
    }

    #[test]
    fn etags_match_lists_and_weak_tags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(!etag_matches("\"x\"", "\"abc\""));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type("assets/a-B.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("editor.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/s.css"), "text/css; charset=utf-8");
    }
}
