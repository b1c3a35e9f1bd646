//! Counters and gauges served at `GET /metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::close::CloseCode;

/// Process-wide gateway metrics (lock-free; cheap to bump on hot paths).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Rooms currently loaded.
    pub rooms_open: AtomicI64,
    /// Documents loaded from the store (one per room opening: single-flight).
    pub room_loads: AtomicU64,
    /// WebSocket connections currently joined to a room.
    pub peers_connected: AtomicI64,
    /// Document updates applied and stored (each non-empty update of a
    /// sender's run counts, though the run is applied and stored merged).
    pub updates_applied: AtomicU64,
    /// Awareness updates applied.
    pub awareness_updates: AtomicU64,
    /// Binary payload bytes received.
    pub bytes_in: AtomicU64,
    /// Payload bytes queued to peers.
    pub bytes_out: AtomicU64,
    /// Closes initiated by the server, per code (indexed like `CloseCode::ALL`).
    closes: [AtomicU64; CloseCode::ALL.len()],
}

/// A Prometheus histogram from per-bucket (not cumulative) `counts`, one
/// more than `bounds` (the last: over the last bound), and a sum in µs.
fn histogram_seconds(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    total_us: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let all: u64 = counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {all}");
    let _ = writeln!(out, "{name}_sum {}", total_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {all}");
}

impl Metrics {
    /// Counts a server-initiated close.
    pub fn record_close(&self, code: CloseCode) {
        self.closes[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition, with the store's group-commit counters.
    pub fn render(&self, store: tandem_store::CommitStats) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "tandem_rooms_open",
            "Rooms currently loaded.",
            self.rooms_open.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tandem_peers_connected",
            "Peers currently joined to a room.",
            self.peers_connected.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tandem_runtime_workers",
            "Async worker threads of the runtime serving this request (0 outside one).",
            tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_workers() as i64),
        );
        counter(
            &mut out,
            "tandem_room_loads_total",
            "Documents loaded from the store into a room.",
            load(&self.room_loads),
        );
        counter(
            &mut out,
            "tandem_updates_applied_total",
            "Document updates applied and stored.",
            load(&self.updates_applied),
        );
        counter(
            &mut out,
            "tandem_awareness_updates_total",
            "Awareness updates applied.",
            load(&self.awareness_updates),
        );
        counter(
            &mut out,
            "tandem_bytes_in_total",
            "WebSocket payload bytes received.",
            load(&self.bytes_in),
        );
        counter(
            &mut out,
            "tandem_bytes_out_total",
            "WebSocket payload bytes queued to peers.",
            load(&self.bytes_out),
        );
        counter(
            &mut out,
            "tandem_store_writes_total",
            "Store writes registered for durability (one per batch of updates).",
            store.writes,
        );
        counter(
            &mut out,
            "tandem_store_syncs_total",
            "Disk syncs run by the store's group commit.",
            store.syncs,
        );
        counter(
            &mut out,
            "tandem_store_merged_records_total",
            "Log records that checkpoints merged into their neighbours' instead of inserting them one by one.",
            store.merged_records,
        );
        histogram_seconds(
            &mut out,
            "tandem_store_sync_seconds",
            "Time of each group-commit round's log write and fdatasync.",
            &tandem_store::SYNC_SECONDS_BUCKETS,
            &store.sync_times.counts,
            store.sync_times.total_us,
        );
        histogram_seconds(
            &mut out,
            "tandem_store_checkpoint_seconds",
            "Time each store checkpoint (deferred appends into sled, sled's flush and sync, the log emptied; or the manifest) held the log; durable writes wait meanwhile.",
            &tandem_store::SYNC_SECONDS_BUCKETS,
            &store.checkpoint_times.counts,
            store.checkpoint_times.total_us,
        );
        let _ = writeln!(
            out,
            "# HELP tandem_closes_total Connections closed by the server, by close code.\n# TYPE tandem_closes_total counter"
        );
        for code in CloseCode::ALL {
            let _ = writeln!(
                out,
                "tandem_closes_total{{code=\"{}\"}} {}",
                code.code(),
                load(&self.closes[code.index()])
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_and_checkpoint_histograms_are_cumulative_and_count_every_round() {
        let mut store = tandem_store::CommitStats::default();
        store.sync_times.counts[0] = 3; // <= 0.2 ms
        store.sync_times.counts[2] = 1; // 0.5-1 ms
        store.sync_times.counts[tandem_store::SYNC_SECONDS_BUCKETS.len()] = 2; // > 1 s
        store.sync_times.total_us = 2_500_000;
        store.checkpoint_times.counts[4] = 1; // 2-5 ms
        store.checkpoint_times.total_us = 4_000;
        let text = Metrics::default().render(store);
        for line in [
            "# TYPE tandem_store_sync_seconds histogram",
            "tandem_store_sync_seconds_bucket{le=\"0.0002\"} 3",
            "tandem_store_sync_seconds_bucket{le=\"0.0005\"} 3",
            "tandem_store_sync_seconds_bucket{le=\"0.001\"} 4",
            "tandem_store_sync_seconds_bucket{le=\"1\"} 4",
            "tandem_store_sync_seconds_bucket{le=\"+Inf\"} 6",
            "tandem_store_sync_seconds_sum 2.5",
            "tandem_store_sync_seconds_count 6",
            "# TYPE tandem_store_checkpoint_seconds histogram",
            "tandem_store_checkpoint_seconds_bucket{le=\"0.002\"} 0",
            "tandem_store_checkpoint_seconds_bucket{le=\"0.005\"} 1",
            "tandem_store_checkpoint_seconds_bucket{le=\"+Inf\"} 1",
            "tandem_store_checkpoint_seconds_sum 0.004",
            "tandem_store_checkpoint_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
