//! Fan-out: R rooms × C clients, each typing E real keystrokes per second
//! plus an awareness update per second; every other peer's receipt of every
//! keystroke is timed (edit-to-delivery latency) and counted.
//!
//! Phases: all clients join (SyncStep1/2) → all edit for the duration →
//! editing stops and receivers drain until every expected delivery has
//! arrived or the drain timeout passes → the rest are reported missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use yrs::sync::Awareness;

use crate::conn::Conn;
use crate::dialect::Endpoint;
use crate::ledger::{Ledger, Receipts};
use crate::measure::{DISK_STALL_MS, DiskProbe, Percentiles, UsageMeter};
use crate::protocol::{Incoming, UpdateIds, awareness_message, sync_step2, update_message};
use crate::report::Row;
use crate::trace::{Lcg, Trace, Typist};

/// One fan-out point.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutParams {
    /// Number of rooms (documents).
    pub rooms: usize,
    /// Clients per room; each edits and each receives.
    pub clients: usize,
    /// Keystrokes per second per client.
    pub rate: f64,
    /// Awareness updates per second per client (0 = none).
    pub awareness_hz: f64,
    /// How long clients edit.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Longest wait for in-flight deliveries after editing stops.
    #[serde(with = "secs")]
    pub drain: Duration,
}

mod secs {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl FanoutParams {
    /// "RxC@E/s", the label of the point.
    pub fn label(&self) -> String {
        format!("{}x{}@{}/s", self.rooms, self.clients, self.rate)
    }

    /// The same point with another awareness rate.
    pub fn with_awareness(mut self, hz: f64) -> FanoutParams {
        self.awareness_hz = hz;
        self
    }

    /// Parses "RxC@E" (e.g. "10x5@10").
    pub fn parse(s: &str, duration: Duration) -> anyhow::Result<FanoutParams> {
        let bad = || anyhow::anyhow!("fan-out point '{s}' is not ROOMSxCLIENTS@RATE, e.g. 10x5@10");
        let (rc, rate) = s.split_once('@').ok_or_else(bad)?;
        let (r, c) = rc.split_once('x').ok_or_else(bad)?;
        Ok(FanoutParams {
            rooms: r.parse().map_err(|_| bad())?,
            clients: c.parse().map_err(|_| bad())?,
            rate: rate.trim_end_matches("/s").parse().map_err(|_| bad())?,
            awareness_hz: 1.0,
            duration,
            drain: Duration::from_secs(5),
        })
    }
}

/// What one fan-out point measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanoutResult {
    /// Clients that joined (completed the sync handshake).
    pub joined: usize,
    /// Client errors (connect, handshake, unexpected close), first few messages.
    pub errors: Vec<String>,
    /// Keystroke updates sent.
    pub sends: u64,
    /// Deliveries expected: each send × (peers in its room − 1).
    pub expected: u64,
    /// First deliveries received.
    pub deliveries: u64,
    /// expected − deliveries.
    pub missing: u64,
    /// Own updates echoed back by the server.
    pub echoes: u64,
    /// Updates received that matched no send.
    pub unmatched: u64,
    /// Awareness messages received.
    pub awareness_received: u64,
    /// Edit-to-delivery latency.
    pub latency: Percentiles,
    /// Deliveries per second of editing time.
    pub deliveries_per_s: f64,
    /// Time to get every client joined.
    pub join_s: f64,
}

/// How a client's run is steered from the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Wait,
    Edit,
    Drain,
    Done,
}

struct ClientOutcome {
    receipts: Receipts,
    awareness: u64,
    error: Option<String>,
}

/// Unique-enough Yjs client ids for this process (< 2^32, as Yjs makes them).
pub fn client_id_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    let mut rng = Lcg(nanos as u64 ^ ((std::process::id() as u64) << 32));
    (rng.next_u64() % (1 << 31)) + 1
}

/// The documents of a point whose rooms are named after `room_prefix`.
pub fn room_names(room_prefix: &str, rooms: usize) -> Vec<String> {
    (0..rooms).map(|r| format!("{room_prefix}-r{r}")).collect()
}

/// Runs one point against `endpoint_of(doc)` (documents already made, see
/// [`crate::target::Target::prepare`]) and summarises it.
pub async fn run(
    endpoint_of: &(dyn Fn(&str) -> Endpoint + Sync),
    room_prefix: &str,
    trace: Arc<Trace>,
    p: &FanoutParams,
) -> FanoutResult {
    let (phase_tx, phase_rx) = watch::channel(Phase::Wait);
    let (joined_tx, mut joined_rx) = mpsc::channel::<Result<(), String>>(p.rooms * p.clients + 1);
    let id_base = client_id_base();
    let mut ledgers = Vec::new();
    let mut handles = Vec::new();
    for (r, room) in room_names(room_prefix, p.rooms).iter().enumerate() {
        let ledger = Arc::new(Ledger::default());
        ledgers.push(ledger.clone());
        let endpoint = endpoint_of(room);
        for c in 0..p.clients {
            let client = FanoutClient {
                endpoint: endpoint.clone(),
                ledger: ledger.clone(),
                me: c as u32,
                client_id: id_base + (r * p.clients + c) as u64,
                trace: trace.clone(),
                period: Duration::from_secs_f64(1.0 / p.rate.max(0.001)),
                awareness_period: (p.awareness_hz > 0.0)
                    .then(|| Duration::from_secs_f64(1.0 / p.awareness_hz)),
                phase: phase_rx.clone(),
                joined: joined_tx.clone(),
            };
            handles.push(tokio::spawn(client.run()));
        }
    }
    drop(joined_tx);
    let t0 = Instant::now();
    let mut result = FanoutResult::default();
    let join_deadline =
        Duration::from_secs(30) + Duration::from_millis(20 * (p.rooms * p.clients) as u64);
    for _ in 0..p.rooms * p.clients {
        match tokio::time::timeout(join_deadline.saturating_sub(t0.elapsed()), joined_rx.recv())
            .await
        {
            Ok(Some(Ok(()))) => result.joined += 1,
            Ok(Some(Err(_))) | Ok(None) => {}
            Err(_) => break,
        }
    }
    result.join_s = t0.elapsed().as_secs_f64();

    let _ = phase_tx.send(Phase::Edit);
    tokio::time::sleep(p.duration).await;
    let _ = phase_tx.send(Phase::Drain);
    // Let the last sends land in the ledgers, then wait for every expected delivery.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let drain_start = Instant::now();
    let peers = (p.clients.saturating_sub(1)) as u64;
    loop {
        let expected: u64 = ledgers.iter().map(|l| l.sends() * peers).sum();
        let delivered: u64 = ledgers.iter().map(|l| l.delivered()).sum();
        if delivered >= expected || drain_start.elapsed() > p.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = phase_tx.send(Phase::Done);

    let mut latencies = Vec::new();
    for h in handles {
        let Ok(out) = h.await else { continue };
        if let Some(e) = out.error {
            if result.errors.len() < 5 {
                result.errors.push(e);
            } else if result.errors.len() == 5 {
                result.errors.push("...".into());
            }
        }
        result.deliveries += out.receipts.deliveries;
        result.echoes += out.receipts.echoes;
        result.unmatched += out.receipts.unmatched;
        result.awareness_received += out.awareness;
        latencies.extend_from_slice(&out.receipts.latencies_us);
    }
    result.sends = ledgers.iter().map(|l| l.sends()).sum();
    result.expected = result.sends * peers;
    result.missing = result.expected.saturating_sub(result.deliveries);
    result.latency = Percentiles::of_us(&mut latencies);
    result.deliveries_per_s = result.deliveries as f64 / p.duration.as_secs_f64();
    result
}

/// Runs one point with server usage measured and returns its table row.
pub async fn run_row(
    target: &crate::target::Target,
    trace: Arc<Trace>,
    p: &FanoutParams,
    run_id: &str,
) -> Row {
    let prefix = format!(
        "fanout-{run_id}-{}",
        p.label().replace(['@', '/', '.'], "_")
    );
    let prepared = target.prepare(&room_names(&prefix, p.rooms)).await;
    let meter = UsageMeter::start(target.pid);
    let probe = DiskProbe::start(&std::env::temp_dir());
    let endpoint_of = |doc: &str| target.endpoint(doc);
    let res = match prepared {
        Ok(()) => run(&endpoint_of, &prefix, trace, p).await,
        Err(e) => FanoutResult {
            errors: vec![format!("creating documents: {e}")],
            ..Default::default()
        },
    };
    let usage = meter.finish();
    let disk = probe.map(DiskProbe::finish);
    let ok = res.errors.is_empty() && res.missing == 0 && res.joined == p.rooms * p.clients;
    let mut note = format!(
        "{} sends, {} deliveries, {} awareness",
        res.sends, res.deliveries, res.awareness_received
    );
    if let Some(d) = disk {
        note.push_str(&disk_note(d.p99_ms, d.max_ms));
    }
    if usage.bench_cpu > 0.9 {
        note.push_str("; BENCH SATURATED a core: latency includes generator delay");
    }
    if let Some(e) = res.errors.first() {
        note.push_str(&format!(
            "; {} joined of {}; error: {e}",
            res.joined,
            p.rooms * p.clients
        ));
    }
    Row {
        workload: "fanout".into(),
        point: p.label(),
        server: target.name.clone(),
        latency: Some(res.latency),
        rate: Some(res.deliveries_per_s),
        rate_unit: "deliv/s".into(),
        missing: Some(res.missing),
        delivered: Some(res.deliveries),
        usage,
        ok,
        note,
        detail: serde_json::json!({ "params": p, "result": res, "disk_syncs": disk }),
    }
}

/// What a row's note says of the disk probe's syncs (see
/// [`crate::measure::DiskProbe`]).
pub fn disk_note(p99_ms: f64, max_ms: f64) -> String {
    let mut note = format!("; disk sync p99 {p99_ms:.1} ms, longest {max_ms:.1} ms");
    if max_ms > DISK_STALL_MS {
        note.push_str(" (DISK STALLED: a durable server's tail includes it)");
    }
    note
}

/// A well-mixed value in [0, 1) from `x` (SplitMix64 finaliser), so that
/// consecutive client ids get unrelated tick offsets.
fn unit_hash(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

struct FanoutClient {
    endpoint: Endpoint,
    ledger: Arc<Ledger>,
    me: u32,
    client_id: u64,
    trace: Arc<Trace>,
    period: Duration,
    awareness_period: Option<Duration>,
    phase: watch::Receiver<Phase>,
    joined: mpsc::Sender<Result<(), String>>,
}

impl FanoutClient {
    async fn run(mut self) -> ClientOutcome {
        let mut out = ClientOutcome {
            receipts: Receipts::default(),
            awareness: 0,
            error: None,
        };
        if let Err(e) = self.session(&mut out).await {
            out.error = Some(e.to_string());
            let _ = self.joined.try_send(Err(e.to_string()));
        }
        out
    }

    async fn session(&mut self, out: &mut ClientOutcome) -> Result<(), crate::conn::ConnError> {
        let mut typist = Typist::new(self.client_id);
        let mut awareness = Awareness::new(typist.doc().clone());
        let _ = awareness.set_local_state(
            serde_json::json!({"user": {"name": format!("bench-{}", self.me), "color": "#30bced"}}),
        );
        let mut conn = Conn::connect(&self.endpoint).await?;
        let awareness_count = &mut out.awareness;
        conn.join(
            typist.doc(),
            awareness_message(&awareness),
            Duration::from_secs(30),
            |m| {
                if let Incoming::Awareness(_) = m {
                    *awareness_count += 1;
                }
            },
        )
        .await?;
        let _ = self.joined.send(Ok(())).await;

        // Spread clients' ticks over the period so rooms do not pulse. The
        // intervals are (re)started when editing begins: an interval that
        // was not polled while waiting would fire for every client at once.
        let edit_offset = self.period.mul_f64(unit_hash(self.client_id));
        let aw_period = self.awareness_period.unwrap_or(Duration::from_secs(3600));
        let aw_offset = aw_period.mul_f64(unit_hash(self.client_id ^ 0xa5a5_5a5a));
        let mut edit_tick = tokio::time::interval(self.period);
        edit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut aw_tick = tokio::time::interval(aw_period);
        aw_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut phase = *self.phase.borrow();
        let mut cursor = 0u32;
        loop {
            let editing = phase == Phase::Edit;
            tokio::select! {
                changed = self.phase.changed() => {
                    if changed.is_err() { break; }
                    phase = *self.phase.borrow();
                    if phase == Phase::Done { break; }
                    if phase == Phase::Edit {
                        let now = tokio::time::Instant::now();
                        edit_tick.reset_at(now + edit_offset);
                        aw_tick.reset_at(now + aw_offset);
                    }
                }
                _ = edit_tick.tick(), if editing => {
                    let update = typist.next_update(&self.trace);
                    if let Some(key) = UpdateIds::of(&update).ok().and_then(|ids| ids.key()) {
                        self.ledger.record(key, self.me, Instant::now());
                        conn.send(update_message(update)).await?;
                    }
                }
                _ = aw_tick.tick(), if editing && self.awareness_period.is_some() => {
                    cursor += 1;
                    let _ = awareness.set_local_state(serde_json::json!({
                        "user": {"name": format!("bench-{}", self.me), "color": "#30bced"},
                        "cursor": {"anchor": cursor, "head": cursor}
                    }));
                    if let Some(msg) = awareness_message(&awareness) {
                        conn.send(msg).await?;
                    }
                }
                msgs = conn.recv() => {
                    let now = Instant::now();
                    for msg in msgs? {
                        match msg {
                            Incoming::Update(u) => out.receipts.receive(&self.ledger, self.me, &u, now),
                            Incoming::Awareness(_) => out.awareness += 1,
                            Incoming::SyncStep1(sv) => conn.send(sync_step2(typist.doc(), &sv)).await?,
                            _ => {}
                        }
                    }
                }
            }
        }
        conn.close().await;
        Ok(())
    }
}
