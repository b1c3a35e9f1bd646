//! `GET /api/backup`: streams a backup archive of every document (format:
//! `tandem_store::backup`) while the server keeps running.
//!
//! The archive is written on one blocking thread into a bounded channel
//! ([`CHUNKS_IN_FLIGHT`] chunks of up to [`CHUNK_BYTES`]), so a slow reader
//! back-pressures the writer instead of growing memory, and a reader that
//! goes away stops it. At most [`MAX_CONCURRENT_BACKUPS`] run at once; more
//! are refused with 503 (each holds a blocking thread for its duration).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use tandem_store::Store;
use tokio::sync::{Semaphore, mpsc};
use warp::Reply;
use warp::http::StatusCode;

/// Backups allowed to run at the same time.
pub(crate) const MAX_CONCURRENT_BACKUPS: usize = 1;

/// Chunks queued between the archive writer and the socket.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 8;

/// Bytes per chunk sent to the socket.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// Limits concurrent backups (one per server by default).
#[derive(Clone)]
pub(crate) struct Backups {
    running: Arc<Semaphore>,
}

impl Default for Backups {
    fn default() -> Self {
        Backups {
            running: Arc::new(Semaphore::new(MAX_CONCURRENT_BACKUPS)),
        }
    }
}

/// A `Write` that hands full chunks to the response stream.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "backup reader went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES - self.buffer.len();
        let n = data.len().min(room);
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Backups {
    /// Starts a backup and returns the streaming response (503 while
    /// another runs). A failure mid-way ends the stream with an error, so
    /// the client sees a cut-short archive (no manifest), never a
    /// complete-looking one.
    pub(crate) fn start(&self, store: Store) -> Box<dyn Reply> {
        let Ok(permit) = Arc::clone(&self.running).try_acquire_owned() else {
            return Box::new(warp::reply::with_status(
                "a backup is already running; try again when it has finished\n",
                StatusCode::SERVICE_UNAVAILABLE,
            ));
        };
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut writer = ChannelWriter {
                tx: tx.clone(),
                buffer: Vec::with_capacity(CHUNK_BYTES),
            };
            match tandem_store::backup::write_backup(&store, &mut writer) {
                Ok(manifest) => tracing::info!(
                    documents = manifest.documents.len(),
                    skipped = manifest.skipped.len(),
                    "backup streamed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "backup failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Box::new(warp::reply::with_header(
            warp::reply::with_header(
                warp::reply::stream(stream),
                "content-type",
                "application/x-tar",
            ),
            "content-disposition",
            "attachment; filename=\"tandem-backup.tar\"",
        ))
    }
}
