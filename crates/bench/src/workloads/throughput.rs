//! Throughput: one client streams every update of a trace (259,778 for
//! automerge-paper) as fast as the server takes them, with at most `window`
//! updates in flight (sent but not yet seen by the receiving peer); a second
//! client in the room receives them. Reports updates/s end to end and checks
//! that a fresh joiner's copy of the document equals the trace's end text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::conn::{Conn, ConnError};
use crate::ledger::{Ledger, Receipts};
use crate::measure::{Percentiles, UsageMeter};
use crate::protocol::{Incoming, UpdateIds, sync_step2, update_message};
use crate::report::Row;
use crate::target::Target;
use crate::trace::TEXT_NAME;

/// What a streaming run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamResult {
    /// Updates sent.
    pub sent: u64,
    /// Updates the receiving peer got.
    pub delivered: u64,
    /// Seconds from the first send to the last delivery.
    pub seconds: f64,
    /// delivered / seconds.
    pub updates_per_s: f64,
    /// Send-to-delivery latency under this load.
    pub latency: Percentiles,
    /// Whether a fresh joiner's text equals the expected text.
    pub content_ok: bool,
    /// Bytes of the joiner's SyncStep2.
    pub state_bytes: usize,
    /// First error, if any.
    pub error: Option<String>,
    /// Stopped at [`STREAM_LIMIT`] before every update was delivered.
    pub cut_short: bool,
}

/// How long a stream may take before it is cut short: a server that slows
/// down as the document grows (y-sweet re-encodes it) would otherwise hold
/// the suite for many minutes; the row then reports the rate so far.
pub const STREAM_LIMIT: Duration = Duration::from_secs(120);

/// Streams `updates` into `doc` of `target` with a bounded in-flight window
/// and waits until a second peer has received all of them (or no progress
/// for `stall`, or [`STREAM_LIMIT`] in all).
pub async fn stream(
    target: &Target,
    doc: &str,
    updates: Arc<Vec<Vec<u8>>>,
    window: u64,
    stall: Duration,
) -> StreamResult {
    let mut result = StreamResult {
        sent: 0,
        ..Default::default()
    };
    match stream_inner(target, doc, updates, window, stall, &mut result).await {
        Ok(()) => {}
        Err(e) => result.error = Some(e.to_string()),
    }
    result
}

async fn stream_inner(
    target: &Target,
    doc: &str,
    updates: Arc<Vec<Vec<u8>>>,
    window: u64,
    stall: Duration,
    result: &mut StreamResult,
) -> Result<(), ConnError> {
    target
        .prepare(&[doc])
        .await
        .map_err(|e| ConnError::Setup(e.to_string()))?;
    let endpoint = target.endpoint(doc);
    let ledger = Arc::new(Ledger::default());
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());

    // The receiving peer joins first so it sees every update as a broadcast.
    let mut reader = Conn::connect(&endpoint).await?;
    let reader_doc = yrs::Doc::new();
    reader
        .join(&reader_doc, None, Duration::from_secs(30), |_| {})
        .await?;
    let total = updates.len() as u64;
    let reader_task = {
        let (ledger, delivered, progress) = (ledger.clone(), delivered.clone(), progress.clone());
        tokio::spawn(async move {
            let mut receipts = Receipts::default();
            while receipts.deliveries < total {
                let msgs = reader.recv().await?;
                let now = Instant::now();
                for msg in msgs {
                    match msg {
                        Incoming::Update(u) => receipts.receive(&ledger, 1, &u, now),
                        Incoming::SyncStep1(sv) => {
                            reader.send(sync_step2(&reader_doc, &sv)).await?
                        }
                        _ => {}
                    }
                }
                delivered.store(receipts.deliveries, Ordering::Release);
                progress.notify_one();
            }
            reader.close().await;
            Ok::<_, ConnError>(receipts)
        })
    };

    // Streaming: the frames fed up to the window go out many to a write.
    let mut writer = Conn::connect_streaming(&endpoint).await?;
    let writer_doc = yrs::Doc::new();
    writer
        .join(&writer_doc, None, Duration::from_secs(30), |_| {})
        .await?;
    let start = Instant::now();
    let mut last_progress = (0u64, Instant::now());
    let mut sent = 0usize;
    while delivered.load(Ordering::Acquire) < total {
        let done = delivered.load(Ordering::Acquire);
        if done != last_progress.0 {
            last_progress = (done, Instant::now());
        } else if last_progress.1.elapsed() > stall {
            break;
        }
        if start.elapsed() > STREAM_LIMIT {
            result.cut_short = true;
            break;
        }
        if sent < updates.len() && (sent as u64) < done + window {
            // Queue up to the window, then flush once: fewer syscalls, same frames.
            let until = (done + window).min(total) as usize;
            let now = Instant::now();
            for u in &updates[sent..until] {
                if let Some(key) = UpdateIds::of(u).ok().and_then(|ids| ids.key()) {
                    ledger.record(key, 0, now);
                }
                writer.feed(update_message(u.clone())).await?;
            }
            writer.flush().await?;
            sent = until;
            continue;
        }
        // Wait for the reader to make room; discard echoes of our own updates.
        tokio::select! {
            _ = progress.notified() => {}
            msgs = writer.recv() => { for m in msgs? { if let Incoming::SyncStep1(sv) = m { writer.send(sync_step2(&writer_doc, &sv)).await?; } } }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result.sent = sent as u64;
    result.delivered = delivered.load(Ordering::Acquire);
    result.updates_per_s = result.delivered as f64 / result.seconds.max(1e-9);
    if result.delivered >= total {
        if let Ok(Ok(mut receipts)) = reader_task.await {
            result.latency = Percentiles::of_us(&mut receipts.latencies_us);
        }
    } else {
        reader_task.abort();
    }
    writer.close().await;
    Ok(())
}

/// Joins `doc` as a fresh client and returns its text and the size of the
/// SyncStep2 it received.
pub async fn fetch_text(target: &Target, doc: &str) -> Result<(String, usize), ConnError> {
    target
        .prepare(&[doc])
        .await
        .map_err(|e| ConnError::Setup(e.to_string()))?;
    let mut c = Conn::connect(&target.endpoint(doc)).await?;
    let local = yrs::Doc::new();
    let state = c
        .join(&local, None, Duration::from_secs(60), |_| {})
        .await?;
    c.close().await;
    Ok((text_of_state(&state), state.len()))
}

/// The text of the root type the bench edits, in a document built from `state`.
pub fn text_of_state(state: &[u8]) -> String {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text(TEXT_NAME);
    if let Ok(update) = yrs::Update::decode_v1(state) {
        let mut txn = doc.transact_mut();
        if txn.apply_update(update).is_err() {
            return String::new();
        }
    }
    text.get_string(&doc.transact())
}

/// The throughput row: stream the whole trace, then check the content.
pub async fn run_row(
    target: &Target,
    updates: Arc<Vec<Vec<u8>>>,
    end_text: &str,
    trace_name: &str,
    run_id: &str,
    window: u64,
) -> Row {
    let doc = format!("throughput-{run_id}");
    let meter = UsageMeter::start(target.pid);
    let mut res = stream(
        target,
        &doc,
        updates.clone(),
        window,
        Duration::from_secs(20),
    )
    .await;
    let usage = meter.finish();
    match fetch_text(target, &doc).await {
        Ok((text, bytes)) => {
            res.content_ok = text == end_text;
            res.state_bytes = bytes;
        }
        Err(e) => res.error = res.error.or(Some(format!("final sync: {e}"))),
    }
    let ok = res.error.is_none() && res.content_ok && res.delivered == updates.len() as u64;
    let mut note = format!(
        "{} {} updates in {:.2} s, window {window}; final text {}",
        res.delivered,
        trace_name,
        res.seconds,
        if res.content_ok {
            "== endContent"
        } else {
            "DIFFERS from endContent"
        }
    );
    if res.cut_short {
        note.push_str(&format!(
            "; CUT SHORT at {} s: the rate is of the first {} updates",
            STREAM_LIMIT.as_secs(),
            res.delivered
        ));
    }
    if usage.bench_cpu > 0.9 {
        note.push_str("; BENCH SATURATED a core: server may be faster than shown");
    }
    if let Some(e) = &res.error {
        note.push_str(&format!("; error: {e}"));
    }
    Row {
        workload: "throughput".into(),
        point: format!("{trace_name} x{}", updates.len()),
        server: target.name.clone(),
        // Latencies are summarised only when every update arrived.
        latency: (res.latency.n > 0).then_some(res.latency),
        rate: Some(res.updates_per_s),
        rate_unit: "upd/s".into(),
        missing: Some((updates.len() as u64).saturating_sub(res.delivered)),
        delivered: Some(res.delivered),
        usage,
        ok,
        note,
        detail: serde_json::json!({ "window": window, "result": res }),
    }
}
