//! The route policy: one table saying what each route needs, checked at
//! the edge before any route runs (so a new route is admin-only until it is
//! added here).
//!
//! | route | needs |
//! |---|---|
//! | `GET/HEAD /healthz` | nothing |
//! | `GET /`, `/d/<id>`, `/assets/*` (the editor's static files) | nothing |
//! | `/ws/<id>` | `read` on `<id>` (the mode then decides what the peer may do) |
//! | `GET /api/docs/<id>/text`, `GET /api/docs/<id>/update` | `read` on `<id>` |
//! | `PUT /api/docs/<id>/text`, `POST /api/docs/<id>/update` | `write` on `<id>` |
//! | `DELETE /api/docs/<id>` | `admin` on `<id>` |
//! | `GET /api/docs` (the listing), `/api/backup`, `/api/admin/*`, `/metrics` | server admin: `admin` with `docs: ["*"]` |
//! | anything else under `/api/` | server admin |
//! | anything else | nothing (it is a 404) |

use warp::http::Method;

use crate::access::Mode;

/// What a request must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: open to everyone.
    Open,
    /// A token admitting this document (the raw id from the path) with at least this mode.
    Doc(String, Mode),
    /// An `admin` token for every document (`docs: ["*"]`).
    ServerAdmin,
}

/// What `method path` needs (the table in the module docs).
pub fn need(method: &Method, path: &str) -> Need {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["healthz"] | [""] | ["d", ..] | ["assets", ..] => Need::Open,
        ["ws", id] => Need::Doc((*id).to_owned(), Mode::Read),
        ["api", "docs", id, "text" | "update"] if read => Need::Doc((*id).to_owned(), Mode::Read),
        ["api", "docs", id, "text"] if method == Method::PUT => {
            Need::Doc((*id).to_owned(), Mode::Write)
        }
        ["api", "docs", id, "update"] if method == Method::POST => {
            Need::Doc((*id).to_owned(), Mode::Write)
        }
        ["api", "docs", id] if method == Method::DELETE => Need::Doc((*id).to_owned(), Mode::Admin),
        ["api", ..] | ["metrics"] => Need::ServerAdmin,
        _ => Need::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, mode: Mode) -> Need {
        Need::Doc(id.to_owned(), mode)
    }

    #[test]
    fn the_table() {
        let cases = [
            (Method::GET, "/healthz", Need::Open),
            (Method::HEAD, "/healthz", Need::Open),
            (Method::GET, "/", Need::Open),
            (Method::GET, "/d/notes", Need::Open),
            (Method::GET, "/assets/editor-1.js", Need::Open),
            (Method::GET, "/ws/notes", doc("notes", Mode::Read)),
            (
                Method::GET,
                "/api/docs/notes/text",
                doc("notes", Mode::Read),
            ),
            (
                Method::GET,
                "/api/docs/notes/update",
                doc("notes", Mode::Read),
            ),
            (
                Method::PUT,
                "/api/docs/notes/text",
                doc("notes", Mode::Write),
            ),
            (
                Method::POST,
                "/api/docs/notes/update",
                doc("notes", Mode::Write),
            ),
            (Method::DELETE, "/api/docs/notes", doc("notes", Mode::Admin)),
            (Method::GET, "/api/docs", Need::ServerAdmin),
            (Method::GET, "/api/backup", Need::ServerAdmin),
            (Method::POST, "/api/admin/revoke", Need::ServerAdmin),
            (Method::GET, "/metrics", Need::ServerAdmin),
            (Method::POST, "/api/docs/notes/text", Need::ServerAdmin),
            (Method::GET, "/api/something-new", Need::ServerAdmin),
            (Method::GET, "/favicon.ico", Need::Open),
        ];
        for (method, path, expected) in cases {
            assert_eq!(need(&method, path), expected, "{method} {path}");
        }
    }
}
