//! Limits at the edge: what a client can make the server spend before any
//! route runs. Each bound has a flag ([`EdgeLimits`]), a README default and
//! an end-to-end test that crosses it.
//!
//! Modules, in dependency order:
//! - [`origin`]: `--allowed-origins` (WebSocket upgrades and CORS).
//! - [`clients`]: the connection cap, per-address caps and handshake rates.
//! - [`body`]: body size limit, read deadline and the server-wide budget.
//! - `gate`: the checks every request passes before its route (uses the
//!   above and [`crate::auth`]).
//!
//! The header-read timeout and HTTP/1-only serving are hyper settings,
//! applied by [`crate::server`]'s accept loop.

pub mod body;
pub mod clients;
pub(crate) mod gate;
pub mod origin;

use std::time::Duration;

pub use body::{BodyBudget, BodyRefusal, BoundedBody};
pub use clients::{ClientAddr, Clients, Slot};
pub use origin::AllowedOrigins;

/// File descriptors kept free for the store, the listener and logs.
const FD_RESERVE: u64 = 256;

/// `tandem serve` flags bounding what clients can make the server spend.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeLimits {
    /// Browser origins allowed to open WebSockets and call the HTTP API
    /// (CORS), comma-separated (`https://app.example.com`), or `*`. Default:
    /// the server's own origin and loopback origins. Requests without an
    /// Origin header (non-browser clients) are allowed.
    #[arg(long, env = "TANDEM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Take the client address from the last `X-Forwarded-For` entry (set
    /// this only behind a reverse proxy that writes it).
    #[arg(long, env = "TANDEM_TRUST_PROXY_HEADERS")]
    pub trust_proxy_headers: bool,

    /// A request's headers must arrive within this many ms (slowloris); an
    /// idle keep-alive connection is closed after it too.
    #[arg(long, env = "TANDEM_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// A request's body must arrive within this many ms.
    #[arg(long, env = "TANDEM_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,

    /// Most open TCP connections (WebSockets included); more are refused at
    /// once. Lowered at startup to stay 256 below the open-files limit.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most open connections per client address (0: no cap; loopback peers
    /// are not capped unless the address comes from X-Forwarded-For).
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// WebSocket handshakes per second per client address (a burst of the
    /// same size is allowed; 0: no cap); more get HTTP 429.
    #[arg(
        long,
        env = "TANDEM_MAX_HANDSHAKES_PER_IP_PER_SEC",
        default_value_t = 20
    )]
    pub max_handshakes_per_ip_per_sec: u32,

    /// Largest HTTP request body, in bytes; larger gets 413.
    #[arg(long, env = "TANDEM_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: u64,

    /// Bytes of request bodies in flight server-wide; past it requests get 503.
    #[arg(long, env = "TANDEM_BODY_BUDGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub body_budget_bytes: u64,

    /// Also accept cleartext HTTP/2 (h2c, prior knowledge). Off: HTTP/1.1 only.
    #[arg(long, env = "TANDEM_HTTP2_CLEARTEXT")]
    pub http2_cleartext: bool,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            allowed_origins: Vec::new(),
            trust_proxy_headers: false,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_connections: 20_000,
            max_connections_per_ip: 256,
            max_handshakes_per_ip_per_sec: 20,
            max_body_bytes: 16 * 1024 * 1024,
            body_budget_bytes: 64 * 1024 * 1024,
            http2_cleartext: false,
        }
    }
}

impl EdgeLimits {
    /// Header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    /// Body-read timeout.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms.max(1))
    }

    /// `--max-connections`, lowered to stay 256 descriptors below the
    /// open-files limit (raised to its hard limit first, where allowed).
    pub fn effective_max_connections(&self) -> usize {
        match open_files_limit() {
            Some(limit) => {
                let room = limit.saturating_sub(FD_RESERVE).max(1);
                self.max_connections
                    .min(usize::try_from(room).unwrap_or(usize::MAX))
            }
            None => self.max_connections,
        }
    }
}

/// The open-files soft limit after raising it to the hard limit.
#[cfg(unix)]
fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
    Some(lim.rlim_cur as u64)
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<u64> {
    None
}
