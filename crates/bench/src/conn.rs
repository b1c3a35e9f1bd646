//! One bench client's WebSocket connection: TCP with `TCP_NODELAY`, the
//! WebSocket handshake, one y-protocols message per frame out, every
//! message of a frame in, and the SyncStep1/SyncStep2 exchange on join.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::dialect::{Dialect, Endpoint};
use crate::protocol::{Incoming, sync_step1, sync_step2};

/// Errors a bench connection can hit; each ends that client's run.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The URL is not `ws://host:port/path`.
    #[error("bad WebSocket URL '{0}': expected ws://host:port/path")]
    BadUrl(String),
    /// TCP connect failed (server down, fd limit, port exhaustion).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The WebSocket layer failed (handshake, protocol, I/O).
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server sent bytes that are not y-protocols messages.
    #[error("undecodable message from server: {0}")]
    Decode(#[from] yrs::encoding::read::Error),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// Getting the server ready for this client failed (e.g. creating its document).
    #[error("setup: {0}")]
    Setup(String),
    /// The sync handshake did not finish in time.
    #[error("no SyncStep2 from server within {0:?}")]
    SyncTimeout(Duration),
}

/// A connected client.
pub struct Conn {
    ws: WebSocketStream<TcpStream>,
    /// How this server frames messages (see [`crate::dialect`]).
    dialect: Dialect,
}

/// Bytes a streaming connection ([`Conn::connect_streaming`]) queues before
/// it writes them to its socket.
pub const STREAM_WRITE_BUFFER: usize = 64 * 1024;

/// Small buffers: the connections workload holds 10k of these in one process.
/// `write_buffer` is [`WebSocketConfig::write_buffer_size`]: 0 writes every
/// frame to the socket at once.
fn ws_config(write_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(write_buffer)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

impl Conn {
    /// Opens `endpoint` and sends what its dialect says goes first (Hocuspocus: Auth).
    /// Every frame goes to the socket as it is sent or fed, like an editor's
    /// keystrokes.
    pub async fn connect(endpoint: &Endpoint) -> Result<Conn, ConnError> {
        Self::connect_with(endpoint, 0).await
    }

    /// Opens `endpoint` like [`Conn::connect`], but [`Conn::feed`] queues
    /// frames until [`STREAM_WRITE_BUFFER`] bytes wait or [`Conn::flush`] is
    /// called: a client that streams as fast as the server takes its updates
    /// hands the kernel many frames per write, instead of one `send` (and one
    /// loopback packet) per frame.
    pub async fn connect_streaming(endpoint: &Endpoint) -> Result<Conn, ConnError> {
        Self::connect_with(endpoint, STREAM_WRITE_BUFFER).await
    }

    async fn connect_with(endpoint: &Endpoint, write_buffer: usize) -> Result<Conn, ConnError> {
        let url = endpoint.url.as_str();
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| ConnError::BadUrl(url.to_string()))?;
        let addr = rest.split('/').next().unwrap_or_default().to_string();
        if addr.is_empty() {
            return Err(ConnError::BadUrl(url.to_string()));
        }
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| ConnError::Connect {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true)
            .map_err(|source| ConnError::Connect { addr, source })?;
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config(write_buffer)))
                .await?;
        let mut conn = Conn {
            ws,
            dialect: endpoint.dialect.clone(),
        };
        for frame in conn.dialect.hello() {
            conn.ws.send(Frame::binary(frame)).await?;
        }
        Ok(conn)
    }

    /// The dialect this connection speaks.
    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// Sends one y-protocols message as one binary frame.
    pub async fn send(&mut self, msg: Vec<u8>) -> Result<(), ConnError> {
        let frame = self.dialect.wrap(msg);
        self.ws.send(Frame::binary(frame)).await?;
        Ok(())
    }

    /// Sends one frame that is already in this dialect's framing (see
    /// [`Dialect::keepalive`]).
    pub async fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), ConnError> {
        self.ws.send(Frame::binary(frame)).await?;
        Ok(())
    }

    /// Queues one message without flushing (pair with [`Conn::flush`]).
    pub async fn feed(&mut self, msg: Vec<u8>) -> Result<(), ConnError> {
        let frame = self.dialect.wrap(msg);
        self.ws.feed(Frame::binary(frame)).await?;
        Ok(())
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        self.ws.flush().await?;
        Ok(())
    }

    /// Waits for the next data frame and decodes all of its messages.
    /// Pings are answered by the WebSocket layer; text frames are ignored.
    pub async fn recv(&mut self) -> Result<Vec<Incoming>, ConnError> {
        loop {
            match self.ws.next().await {
                None => return Err(ConnError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Frame::Binary(bytes))) => return Ok(self.dialect.decode(&bytes)?),
                Some(Ok(Frame::Close(_))) => return Err(ConnError::Closed),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Joins the document: sends our SyncStep1 (and `hello`, e.g. our
    /// awareness), answers the server's SyncStep1, and returns the server's
    /// SyncStep2 payload once it arrives. Messages that arrive meanwhile are
    /// handed to `other`.
    pub async fn join(
        &mut self,
        doc: &yrs::Doc,
        hello: Option<Vec<u8>>,
        timeout: Duration,
        mut other: impl FnMut(Incoming),
    ) -> Result<Vec<u8>, ConnError> {
        self.feed(sync_step1(doc)).await?;
        if let Some(hello) = hello {
            self.feed(hello).await?;
        }
        self.flush().await?;
        let wait = async {
            loop {
                for msg in self.recv().await? {
                    match msg {
                        Incoming::SyncStep1(sv) => self.send(sync_step2(doc, &sv)).await?,
                        Incoming::SyncStep2(state) => return Ok(state),
                        msg => other(msg),
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnError::SyncTimeout(timeout))?
    }

    /// Sends a normal close frame (best effort) so the server sees a clean leave.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
