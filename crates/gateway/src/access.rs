//! Who a connection or an HTTP request acts as, as the room sees it: a
//! principal (`sub`) and a [`Mode`]. Never a token: authentication happens
//! at the edge (the upgrade, or each HTTP request) and hands the room only
//! this. With `--auth none` every caller is [`Principal::anonymous`].

use std::fmt;

/// What a principal may do with a document. Ordered: each mode includes
/// everything the modes before it allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Full sync, live updates and awareness; no change to the document.
    Read,
    /// Everything `Read` allows, and edits.
    Write,
    /// Everything `Write` allows, and the listing, delete, backup and admin endpoints.
    Admin,
}

impl Mode {
    /// Whether this mode may change a document.
    pub fn can_write(self) -> bool {
        self >= Mode::Write
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Read => "read",
            Mode::Write => "write",
            Mode::Admin => "admin",
        })
    }
}

/// The authenticated caller of one connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who (the token's `sub`; `anonymous` without auth). Shown in logs.
    pub sub: String,
    /// What this caller may do with the document it was admitted to.
    pub mode: Mode,
}

impl Principal {
    /// The caller when auth is off (`--auth none`): may do everything.
    pub fn anonymous() -> Self {
        Principal {
            sub: "anonymous".to_owned(),
            mode: Mode::Admin,
        }
    }

    /// The server itself (e.g. an HTTP edit already authorized at the edge).
    pub fn server() -> Self {
        Principal {
            sub: "server".to_owned(),
            mode: Mode::Admin,
        }
    }
}
