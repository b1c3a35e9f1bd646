//! What a token says: its claims, and the `docs` scope they grant.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tandem_store::DocId;

use crate::access::Mode;

/// The claims of a Tandem token (the README's "Token format").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to: shown in logs and audit lines, and the
    /// principal the room sees. Never taken from anything but a verified token.
    pub sub: String,
    /// Which documents the token admits: exact ids, prefix patterns
    /// (`team-a.*`), or `*` for every document.
    pub docs: Scope,
    /// What the holder may do with those documents.
    #[serde(serialize_with = "mode_out", deserialize_with = "mode_in")]
    pub mode: Mode,
    /// Expiry (unix seconds); required.
    pub exp: u64,
    /// Not valid before (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (unix seconds): revocation by `sub` or document refuses the
    /// tokens issued at or before it (a token without `iat` counts as old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id, for revoking this one token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

fn mode_out<S: Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mode.to_string())
}

fn mode_in<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let name = String::deserialize(d)?;
    parse_mode(&name).ok_or_else(|| {
        serde::de::Error::custom(format!("mode '{name}' is not one of read, write, admin"))
    })
}

/// Parses `read`, `write` or `admin`.
pub fn parse_mode(name: &str) -> Option<Mode> {
    match name {
        "read" => Some(Mode::Read),
        "write" => Some(Mode::Write),
        "admin" => Some(Mode::Admin),
        _ => None,
    }
}

/// The `docs` claim: the documents a token admits. A JSON array of
/// patterns (a single string is accepted as a one-element array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Scope(Vec<String>);

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let patterns = match OneOrMany::deserialize(d)? {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(p) => p,
        };
        Scope::new(patterns).map_err(serde::de::Error::custom)
    }
}

/// Most patterns one token may carry (a bound on per-request matching work).
const MAX_PATTERNS: usize = 64;

impl Scope {
    /// A scope of `patterns`: each an exact document id, an id prefix
    /// followed by `*` (`team-a.*`), or `*` alone.
    pub fn new(patterns: Vec<String>) -> Result<Scope, String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("docs has more than {MAX_PATTERNS} patterns"));
        }
        for p in &patterns {
            let exact = p.strip_suffix('*').unwrap_or(p);
            if exact.contains('*') {
                return Err(format!(
                    "docs pattern '{p}': '*' may only end a pattern (team-a.*) or stand alone"
                ));
            }
            if !exact.is_empty() && DocId::new(exact.to_owned()).is_err() && !p.ends_with('*') {
                return Err(format!("docs pattern '{p}' is not a valid document id"));
            }
        }
        Ok(Scope(patterns))
    }

    /// Every document.
    pub fn everything() -> Scope {
        Scope(vec!["*".to_owned()])
    }

    /// Whether `doc` is inside this scope.
    pub fn admits(&self, doc: &DocId) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => doc.as_str().starts_with(prefix),
            None => p == doc.as_str(),
        })
    }

    /// Whether this scope is every document (`*`): server-wide admin
    /// endpoints need it.
    pub fn is_everything(&self) -> bool {
        self.0.iter().any(|p| p == "*")
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> DocId {
        DocId::new(id.to_owned()).expect("valid id")
    }

    fn scope(patterns: &[&str]) -> Scope {
        Scope::new(patterns.iter().map(|p| p.to_string()).collect()).expect("valid scope")
    }

    #[test]
    fn exact_ids_admit_only_themselves() {
        let s = scope(&["notes", "plan"]);
        assert!(s.admits(&doc("notes")));
        assert!(s.admits(&doc("plan")));
        assert!(!s.admits(&doc("notes2")));
        assert!(!s.admits(&doc("note")));
    }

    #[test]
    fn prefix_patterns_admit_ids_that_start_with_them() {
        let s = scope(&["team-a.*"]);
        assert!(s.admits(&doc("team-a.plan")));
        assert!(!s.admits(&doc("team-a")));
        assert!(!s.admits(&doc("team-ab.plan")));
        assert!(!s.admits(&doc("team-b.plan")));
    }

    #[test]
    fn star_admits_everything() {
        let s = scope(&["*"]);
        assert!(s.admits(&doc("anything")));
        assert!(s.is_everything());
        assert!(!scope(&["team-a.*"]).is_everything());
    }

    #[test]
    fn star_inside_a_pattern_is_refused() {
        assert!(Scope::new(vec!["a*b".into()]).is_err());
        assert!(Scope::new(vec!["**".into()]).is_err());
        assert!(Scope::new(vec!["bad/id".into()]).is_err());
    }

    #[test]
    fn docs_claim_may_be_one_string_or_an_array() {
        let one: Scope = serde_json::from_str("\"notes\"").expect("string");
        assert_eq!(one, scope(&["notes"]));
        let many: Scope = serde_json::from_str("[\"a\",\"b.*\"]").expect("array");
        assert_eq!(many, scope(&["a", "b.*"]));
    }

    #[test]
    fn mode_claim_is_a_lowercase_name() {
        let json = r#"{"sub":"ana","docs":["*"],"mode":"read","exp":1}"#;
        let claims: Claims = serde_json::from_str(json).expect("claims");
        assert_eq!(claims.mode, Mode::Read);
        let bad = r#"{"sub":"ana","docs":["*"],"mode":"root","exp":1}"#;
        assert!(serde_json::from_str::<Claims>(bad).is_err());
    }
}
