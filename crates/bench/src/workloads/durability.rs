//! Durability under `kill -9`: what a server loses of the edits it had
//! already delivered to other clients.
//!
//! One trial: W writers type real keystrokes into one document while O
//! observers record every edit the server delivers to them (first delivery
//! time). At a random moment the server gets SIGKILL; every client is
//! dropped at that instant (a reconnecting writer would re-upload its state
//! and hide the loss); the server starts again on the same storage; a fresh
//! client joins and checks, for each delivered edit, whether the document
//! still has it (an insert: the state vector covers its first clock; a
//! delete: the delete set holds its first id). An edit some observer saw
//! but the restarted server no longer has was acknowledged to the world
//! and then lost.
//!
//! Each trial is one row: delivered edits, lost edits, the age of the
//! oldest lost edit at the moment of the kill (how far back the loss
//! reaches: a debounce or checkpoint interval shows up here), and the time
//! from restart to healthy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use yrs::updates::decoder::Decode;
use yrs::{ID, ReadTxn, Transact};

use crate::conn::{Conn, ConnError};
use crate::ledger::{Delivery, Ledger};
use crate::protocol::{IdKind, Incoming, UpdateIds, sync_step2, update_message};
use crate::report::Row;
use crate::target::Target;
use crate::trace::{Lcg, Trace, Typist};
use crate::workloads::fanout::client_id_base;

/// Durability sizing.
#[derive(Debug, Clone, Serialize)]
pub struct DurabilityParams {
    /// Clients typing.
    pub writers: usize,
    /// Clients recording deliveries.
    pub observers: usize,
    /// Keystrokes per second per writer.
    pub rate: f64,
    /// Trials (each on its own document, the server restarted in between).
    pub trials: usize,
    /// The kill comes uniformly at random between these seconds after typing starts.
    #[serde(with = "secs_pair")]
    pub kill_between: (Duration, Duration),
}

mod secs_pair {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &(std::time::Duration, std::time::Duration),
        s: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::Serialize;
        (d.0.as_secs_f64(), d.1.as_secs_f64()).serialize(s)
    }
}

/// First delivery time of each send (indexed like the ledger), shared by the observers.
type Delivered = Arc<Mutex<Vec<Option<Instant>>>>;

async fn observe(
    mut c: Conn,
    ledger: Arc<Ledger>,
    delivered: Delivered,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let doc = yrs::Doc::new();
    let mut matches: Vec<Delivery> = Vec::new();
    loop {
        let msgs = tokio::select! {
            m = c.recv() => m?,
            _ = stop.changed() => return Ok(()),
        };
        let now = Instant::now();
        for m in msgs {
            match m {
                Incoming::Update(u) => {
                    let Ok(ids) = UpdateIds::of(&u) else { continue };
                    matches.clear();
                    ledger.lookup(&ids, &mut matches);
                    let mut d = delivered.lock().unwrap_or_else(|e| e.into_inner());
                    for m in &matches {
                        let i = m.index as usize;
                        if d.len() <= i {
                            d.resize(i + 1, None);
                        }
                        d[i].get_or_insert(now);
                    }
                }
                Incoming::SyncStep1(sv) => c.send(sync_step2(&doc, &sv)).await?,
                _ => {}
            }
        }
    }
}

async fn write(
    mut c: Conn,
    mut typist: Typist,
    trace: Arc<Trace>,
    ledger: Arc<Ledger>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let update = typist.next_update(&trace);
                if let Some(key) = UpdateIds::of(&update).ok().and_then(|ids| ids.key()) {
                    ledger.record(key, 0, Instant::now());
                    c.send(update_message(update)).await?;
                }
            }
            m = c.recv() => {
                for m in m? {
                    if let Incoming::SyncStep1(sv) = m {
                        c.send(sync_step2(typist.doc(), &sv)).await?;
                    }
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// One trial's outcome.
#[derive(Debug, Default, Serialize)]
struct Trial {
    kill_after_s: f64,
    sent: usize,
    delivered: usize,
    lost: usize,
    oldest_lost_age_ms: Option<f64>,
    restart_healthy_ms: f64,
}

async fn trial(
    target: &mut Target,
    trace: Arc<Trace>,
    doc: &str,
    p: &DurabilityParams,
    kill_after: Duration,
) -> anyhow::Result<Trial> {
    target.prepare(&[doc]).await?;
    let endpoint = target.endpoint(doc);
    let ledger = Arc::new(Ledger::default());
    let delivered: Delivered = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..p.observers {
        let mut c = Conn::connect(&endpoint).await?;
        c.join(&yrs::Doc::new(), None, Duration::from_secs(30), |_| {})
            .await?;
        let (l, d, s) = (ledger.clone(), delivered.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(observe(c, l, d, s)));
    }
    let base = client_id_base();
    let period = Duration::from_secs_f64(1.0 / p.rate.max(0.1));
    for w in 0..p.writers {
        let typist = Typist::new(base + w as u64);
        let mut c = Conn::connect(&endpoint).await?;
        c.join(typist.doc(), None, Duration::from_secs(30), |_| {})
            .await?;
        let (t, l, s) = (trace.clone(), ledger.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(write(c, typist, t, l, period, s)));
    }
    tokio::time::sleep(kill_after).await;
    target.kill()?;
    let killed_at = Instant::now();
    // Drop every client at once: no writer gets to re-upload its state.
    for t in &tasks {
        t.abort();
    }
    let _ = stop_tx.send(true);
    let restarted = Instant::now();
    target.start_again()?;
    target.wait_healthy(Duration::from_secs(60)).await?;
    let restart_healthy_ms = restarted.elapsed().as_secs_f64() * 1000.0;
    target.prepare(&[doc]).await?;

    let mut c = Conn::connect(&endpoint).await?;
    let state = c
        .join(&yrs::Doc::new(), None, Duration::from_secs(60), |_| {})
        .await?;
    c.close().await;
    let survivor = yrs::Doc::new();
    survivor
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(&state)?)?;
    let txn = survivor.transact();
    let sv = txn.state_vector();
    let deletes = txn.snapshot().delete_set;

    let delivered = delivered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out = Trial {
        kill_after_s: kill_after.as_secs_f64(),
        sent: ledger.sends() as usize,
        restart_healthy_ms,
        ..Default::default()
    };
    let mut oldest: Option<Instant> = None;
    for (i, seen) in delivered.iter().enumerate() {
        if seen.is_none() {
            continue;
        }
        let Some((key, sent_at)) = ledger.send(i as u32) else {
            continue;
        };
        out.delivered += 1;
        let id = ID::new(yrs::block::ClientID::new(key.client), key.clock);
        let kept = match key.kind {
            IdKind::Insert => sv.get(&id.client) > key.clock,
            IdKind::Delete => deletes.contains(&id),
        };
        if !kept {
            out.lost += 1;
            oldest = Some(oldest.map_or(sent_at, |o| o.min(sent_at)));
        }
    }
    out.oldest_lost_age_ms =
        oldest.map(|o| killed_at.saturating_duration_since(o).as_secs_f64() * 1000.0);
    Ok(out)
}

/// Runs the trials; one row each (or one row saying why not).
pub async fn run_rows(
    target: &mut Target,
    trace: Arc<Trace>,
    run_id: &str,
    p: &DurabilityParams,
) -> Vec<Row> {
    let point = |i: usize| format!("kill -9, trial {}/{}", i + 1, p.trials);
    if !target.persistent || !target.restartable() {
        let mut row = Row::new("durability", &point(0), &target.name);
        row.note = "skipped: server keeps no data or was not started by the bench".into();
        row.ok = true;
        return vec![row];
    }
    let mut rng = Lcg(client_id_base());
    let (lo, hi) = p.kill_between;
    let mut rows = Vec::new();
    for i in 0..p.trials {
        // next_u64 yields 31 bits.
        let u = (rng.next_u64() % 1_000_000) as f64 / 1e6;
        let kill_after = lo + (hi.saturating_sub(lo)).mul_f64(u);
        let mut row = Row::new("durability", &point(i), &target.name);
        let doc = format!("durable-{run_id}-{i}");
        match trial(target, trace.clone(), &doc, p, kill_after).await {
            Ok(t) => {
                row.ok = true;
                row.rate = Some(t.delivered as f64);
                row.rate_unit = "delivered".into();
                row.missing = Some(t.lost as u64);
                row.note = format!(
                    "SIGKILL {:.1} s into typing ({} writers × {}/s, {} observers): {} of {} delivered edits lost{}; healthy {:.0} ms after restart",
                    t.kill_after_s,
                    p.writers,
                    p.rate,
                    p.observers,
                    t.lost,
                    t.delivered,
                    t.oldest_lost_age_ms.map_or(String::new(), |a| format!(
                        ", oldest lost edit {a:.0} ms old"
                    )),
                    t.restart_healthy_ms,
                );
                row.detail = serde_json::json!({ "params": p, "trial": t });
            }
            Err(e) => {
                row.note = format!("trial failed: {e}");
                // Leave a running server for the next trial or workload.
                if target.wait_healthy(Duration::from_secs(1)).await.is_err() {
                    let _ = target.start_again();
                    let _ = target.wait_healthy(Duration::from_secs(30)).await;
                }
            }
        }
        rows.push(row);
    }
    rows
}
