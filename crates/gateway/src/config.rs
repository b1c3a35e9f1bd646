//! The gateway's limits and timings: one clap `Args` struct, flattened into
//! `tandem serve`, so each flag, env var and default is documented in `--help`.

use std::time::Duration;

/// Limits and timings of the WebSocket gateway (`tandem serve --help` lists them).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes; bigger frames close the
    /// connection with 1009.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most peers in one document room; more get close code 4013.
    #[arg(long, env = "TANDEM_MAX_PEERS_PER_ROOM", default_value_t = 512)]
    pub max_peers_per_room: usize,

    /// Most documents open at once. At the cap, opening another first
    /// unloads the least recently used room with no peer and nothing in
    /// flight; only when every open room is in use is the join refused with
    /// 4013 (HTTP 503).
    #[arg(long, env = "TANDEM_MAX_OPEN_ROOMS", default_value_t = 10_000)]
    pub max_open_rooms: usize,

    /// How long an empty room stays loaded (ms) before it compacts and unloads.
    #[arg(long, env = "TANDEM_ROOM_UNLOAD_GRACE_MS", default_value_t = 10_000)]
    pub room_unload_grace_ms: u64,

    /// How long a room no WebSocket peer has joined (opened by HTTP
    /// requests only) stays loaded after its last request (ms).
    #[arg(long, env = "TANDEM_HTTP_ROOM_GRACE_MS", default_value_t = 1_000)]
    pub http_room_grace_ms: u64,

    /// Outbound queue per peer, in messages; a peer whose queue overflows is
    /// closed with 4008 (its client reconnects and resyncs).
    #[arg(long, env = "TANDEM_PEER_QUEUE", default_value_t = 1024)]
    pub peer_queue: usize,

    /// Outbound backlog per peer, in bytes, beyond which it is closed with 4008
    /// (one message larger than this is still sent to an idle peer).
    #[arg(long, env = "TANDEM_PEER_QUEUE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub peer_queue_bytes: usize,

    /// WebSocket ping interval (ms); a peer silent for two intervals is dropped.
    #[arg(long, env = "TANDEM_PING_INTERVAL_MS", default_value_t = 10_000)]
    pub ping_interval_ms: u64,

    /// Awareness states not renewed within this many ms are removed (JS clients renew every 15 s).
    #[arg(long, env = "TANDEM_AWARENESS_TIMEOUT_MS", default_value_t = 30_000)]
    pub awareness_timeout_ms: u64,

    /// Per-connection write-coalescing target, in bytes: queued frames are
    /// gathered into one socket write up to about this much. The buffer
    /// exists only while a write is under way (an idle connection holds
    /// none), and nothing is read through it: inbound frames are read into
    /// a buffer of exactly their size (`wire.rs`).
    #[arg(long, env = "TANDEM_SOCKET_BUFFER_BYTES", default_value_t = 2048)]
    pub socket_buffer_bytes: usize,

    /// Deepest nesting of types (maps in maps...) an update may create;
    /// deeper is refused whole (1007 / HTTP 400). At most 10,000: yrs work
    /// runs on threads whose stack holds ~40,000 levels.
    #[arg(long, env = "TANDEM_MAX_NESTING_DEPTH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=MAX_NESTING_DEPTH_CAP as i64))]
    pub max_nesting_depth: u32,

    /// Most content a document may hold pending (waiting for updates it has
    /// not seen), in encoded bytes; an update past it is refused (1007 / 400).
    #[arg(long, env = "TANDEM_MAX_PENDING_BYTES", default_value_t = 64 * 1024)]
    pub max_pending_bytes: usize,

    /// Most deleted ranges a document may hold pending (deletions of content
    /// it does not have); an update past it is refused (1007 / 400).
    #[arg(long, env = "TANDEM_MAX_PENDING_DELETES", default_value_t = 10_000)]
    pub max_pending_deletes: usize,

    /// Largest encoded document, in bytes; an update that would grow one past
    /// it is refused (4413 / HTTP 413) and nothing of it stored.
    #[arg(long, env = "TANDEM_MAX_DOC_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_doc_bytes: usize,

    /// Most item structs (insertions yrs keeps apart) in one document; an
    /// update past it is refused like one past `--max-doc-bytes` (4413 /
    /// 413). Encoded size is not resident size: an item costs ~220-430
    /// bytes of memory however small its encoding (a 1,000,000-key map is
    /// 16 MB encoded and ~430 MB resident), so this bounds a document's
    /// memory where `--max-doc-bytes` cannot.
    #[arg(long, env = "TANDEM_MAX_DOC_ITEMS", default_value_t = 500_000)]
    pub max_doc_items: usize,

    /// Outbound bytes queued for all peers of the server together; a peer
    /// whose frame would pass it (and that already has a backlog) is closed
    /// with 4008. Counted per peer: a frame shared by several peers (the
    /// state every joiner gets) counts once for each, an upper bound.
    #[arg(long, env = "TANDEM_MAX_QUEUED_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Largest awareness state (one client id's JSON), in bytes; a bigger
    /// one closes the sender with 1009.
    #[arg(long, env = "TANDEM_MAX_AWARENESS_BYTES", default_value_t = 16 * 1024)]
    pub max_awareness_bytes: usize,

    /// Most awareness broadcasts per second per connection; faster changes
    /// are coalesced to the latest state (none is lost, the last always goes
    /// out). Awareness egress is then at most this × state size × room size.
    #[arg(long, env = "TANDEM_AWARENESS_PER_SEC", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub awareness_per_sec: u32,

    /// Longest time an awareness change (a cursor or selection moved, with
    /// no document change to go with it) waits to ride in the same socket
    /// write as the room's next frame to each peer, in ms; at this age it
    /// goes out alone. Each write is a system call and a packet, so cursors
    /// riding with the edits cost the server ~a third less CPU per
    /// delivered update in a typing room. 0 sends every change at once.
    #[arg(long, env = "TANDEM_AWARENESS_DELAY_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub awareness_delay_ms: u64,

    /// Inbound messages per second one connection may send on average
    /// (WebSocket frames of any kind); past it and its burst, the
    /// connection is closed with 4429. 0 turns the limit off.
    #[arg(long, env = "TANDEM_PEER_MSGS_PER_SEC", default_value_t = 200)]
    pub peer_msgs_per_sec: u64,

    /// Inbound messages one connection may send at once above
    /// `--peer-msgs-per-sec` (the token bucket's size).
    #[arg(long, env = "TANDEM_PEER_MSGS_BURST", default_value_t = 1000)]
    pub peer_msgs_burst: u64,

    /// Inbound bytes per second one connection may send on average; past it
    /// and its burst, the connection is closed with 4429. 0 turns it off.
    #[arg(long, env = "TANDEM_PEER_BYTES_PER_SEC", default_value_t = 8 * 1024 * 1024)]
    pub peer_bytes_per_sec: u64,

    /// Inbound bytes one connection may send at once above
    /// `--peer-bytes-per-sec`; never less than `--max-message-bytes`.
    #[arg(long, env = "TANDEM_PEER_BYTES_BURST", default_value_t = 64 * 1024 * 1024)]
    pub peer_bytes_burst: u64,

    /// Most WebSocket connections one token `sub` may hold at once (with
    /// `--auth jwt`; anonymous connections are not counted); more are
    /// refused with 4429. 0: no quota.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_SUB", default_value_t = 256)]
    pub max_connections_per_sub: usize,

    /// Most documents one token `sub` may be connected to at once (with
    /// `--auth jwt`); a connection to one more is refused with 4429. 0: no quota.
    #[arg(long, env = "TANDEM_MAX_ROOMS_PER_SUB", default_value_t = 64)]
    pub max_rooms_per_sub: usize,
}

/// Largest `--max-nesting-depth` accepted (see `yrs_threads::STACK_BYTES`).
pub const MAX_NESTING_DEPTH_CAP: u32 = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 * 1024 * 1024,
            max_peers_per_room: 512,
            max_open_rooms: 10_000,
            room_unload_grace_ms: 10_000,
            http_room_grace_ms: 1_000,
            peer_queue: 1024,
            peer_queue_bytes: 64 * 1024 * 1024,
            ping_interval_ms: 10_000,
            awareness_timeout_ms: 30_000,
            socket_buffer_bytes: 2048,
            max_nesting_depth: 1000,
            max_pending_bytes: 64 * 1024,
            max_pending_deletes: 10_000,
            max_doc_bytes: 64 * 1024 * 1024,
            max_doc_items: 500_000,
            max_queued_bytes: 1024 * 1024 * 1024,
            max_awareness_bytes: 16 * 1024,
            awareness_per_sec: 10,
            awareness_delay_ms: 50,
            peer_msgs_per_sec: 200,
            peer_msgs_burst: 1000,
            peer_bytes_per_sec: 8 * 1024 * 1024,
            peer_bytes_burst: 64 * 1024 * 1024,
            max_connections_per_sub: 256,
            max_rooms_per_sub: 64,
        }
    }
}

impl Limits {
    /// Grace period of an empty room.
    pub fn room_unload_grace(&self) -> Duration {
        Duration::from_millis(self.room_unload_grace_ms)
    }
    /// Grace period of a room opened by HTTP requests only.
    pub fn http_room_grace(&self) -> Duration {
        Duration::from_millis(self.http_room_grace_ms)
    }
    /// Heartbeat interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(1))
    }
    /// Shortest time between two awareness broadcasts of one connection.
    pub fn awareness_interval(&self) -> Duration {
        Duration::from_secs(1) / self.awareness_per_sec.max(1)
    }
    /// Longest wait of an awareness change for a frame to ride with (0: none).
    pub fn awareness_delay(&self) -> Duration {
        Duration::from_millis(self.awareness_delay_ms)
    }
    /// Awareness expiry.
    pub fn awareness_timeout(&self) -> Duration {
        Duration::from_millis(self.awareness_timeout_ms)
    }
}
