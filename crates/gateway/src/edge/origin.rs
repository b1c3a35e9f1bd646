//! `--allowed-origins`: which browser origins may open WebSockets and call
//! the HTTP API (CORS). A request without an `Origin` header is from a
//! non-browser client (no ambient credentials to abuse) and is allowed.

use warp::http::Uri;

/// The origins admitted besides requests without `Origin`.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    /// Listed origins, normalized (`scheme://host[:port]`, lowercase).
    listed: Vec<String>,
    /// `*`: any origin.
    any: bool,
}

impl AllowedOrigins {
    /// From the flag's values: empty means the server's own origin and
    /// loopback origins (`http://localhost:*`, `127.0.0.1`, `[::1]`); `*`
    /// means any origin.
    pub fn new(origins: &[String]) -> Result<AllowedOrigins, String> {
        let mut listed = Vec::new();
        let mut any = false;
        for o in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            if o == "*" {
                any = true;
                continue;
            }
            let uri: Uri = o.parse().map_err(|_| {
                format!("--allowed-origins: '{o}' is not an origin like https://app.example.com")
            })?;
            if uri.scheme().is_none() || uri.authority().is_none() || uri.path().len() > 1 {
                return Err(format!(
                    "--allowed-origins: '{o}' is not an origin like https://app.example.com"
                ));
            }
            listed.push(o.trim_end_matches('/').to_ascii_lowercase());
        }
        Ok(AllowedOrigins { listed, any })
    }

    /// Whether a request with `Origin: origin` to a server reached as
    /// `Host: host` is allowed.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        let Ok(uri) = origin.parse::<Uri>() else {
            return false; // includes "null" (sandboxed frames, file://)
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        if !matches!(scheme, "http" | "https") {
            return false;
        }
        if self.listed.is_empty() {
            let own = host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str()));
            let loopback = matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]");
            return own || loopback;
        }
        self.listed.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_own_origin_and_loopback_only() {
        let o = AllowedOrigins::new(&[]).expect("default");
        let host = Some("docs.example.com");
        assert!(o.allows("https://docs.example.com", host));
        assert!(o.allows("http://localhost:5173", host));
        assert!(o.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(o.allows("http://[::1]:8080", host));
        assert!(!o.allows("https://evil.example", host));
        assert!(!o.allows("https://docs.example.com.evil.example", host));
        assert!(!o.allows("null", host));
        assert!(!o.allows("file://", host));
    }

    #[test]
    fn a_list_replaces_the_default() {
        let o = AllowedOrigins::new(&["https://App.example.com/".into()]).expect("list");
        assert!(o.allows("https://app.example.com", Some("api.example.com")));
        assert!(!o.allows("http://app.example.com", Some("api.example.com")));
        assert!(!o.allows("http://localhost:3000", Some("api.example.com")));
        assert!(!o.allows("https://api.example.com", Some("api.example.com")));
    }

    #[test]
    fn star_allows_any_and_junk_is_refused_at_startup() {
        assert!(
            AllowedOrigins::new(&["*".into()])
                .expect("star")
                .allows("https://x.y", None)
        );
        assert!(AllowedOrigins::new(&["not an origin".into()]).is_err());
        assert!(AllowedOrigins::new(&["https://a.example/path".into()]).is_err());
    }
}
