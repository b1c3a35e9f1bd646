//! Echo clients: some Yjs client stacks send every update they receive
//! back to the server. One writer types, one plain observer listens, and K
//! echo clients apply each incoming update to their own document and send
//! back whatever it changed there (as a Yjs `doc.on('update')` handler that
//! ignores the origin does: a duplicate changes nothing and is not sent, so
//! the echo does not loop forever).
//!
//! Reports, per edit: how many copies the observer received (ideal 1), how
//! many copies all clients received together (ideal K + 1: each client
//! other than the writer once), and how many records the server stored —
//! read from its `/metrics` counter ([`Target::stored_metric`]; Tandem's
//! `tandem_updates_applied_total`, "document updates applied and stored")
//! before and after, ideal 1. Servers without such a counter show "-".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use yrs::Transact;
use yrs::updates::decoder::Decode;

use crate::conn::{Conn, ConnError};
use crate::ledger::{Delivery, Ledger};
use crate::measure::UsageMeter;
use crate::protocol::{Incoming, UpdateIds, sync_step2, update_message};
use crate::report::Row;
use crate::target::Target;
use crate::trace::{Trace, Typist};
use crate::workloads::fanout::client_id_base;

/// Echo workload sizing.
#[derive(Debug, Clone, Serialize)]
pub struct EchoParams {
    /// Clients that send back every update they receive.
    pub echoers: usize,
    /// Edits the writer makes.
    pub edits: usize,
    /// Edits per second.
    pub rate: f64,
}

/// Copies of the writer's edits one client received (every match, not just the first).
async fn listen(
    mut c: Conn,
    ledger: Arc<Ledger>,
    copies: Arc<AtomicU64>,
    echo: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let doc = yrs::Doc::new();
    // The echo: what applying an incoming update changed in our document.
    let changed = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    {
        let changed = changed.clone();
        let _ = doc.observe_update_v1("echo", move |_: &yrs::TransactionMut, e| {
            changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e.update.clone())
        });
    }
    c.join(&doc, None, Duration::from_secs(30), |_| {}).await?;
    let mut matches: Vec<Delivery> = Vec::new();
    loop {
        let msgs = tokio::select! {
            m = c.recv() => m?,
            _ = stop.changed() => break,
        };
        for m in msgs {
            match m {
                Incoming::Update(u) => {
                    if let Ok(ids) = UpdateIds::of(&u) {
                        matches.clear();
                        ledger.lookup(&ids, &mut matches);
                        copies.fetch_add(matches.len() as u64, Ordering::Relaxed);
                    }
                    if echo && let Ok(update) = yrs::Update::decode_v1(&u) {
                        let _ = doc.transact_mut().apply_update(update);
                        let out: Vec<Vec<u8>> =
                            std::mem::take(&mut *changed.lock().unwrap_or_else(|e| e.into_inner()));
                        for o in out {
                            c.send(update_message(o)).await?;
                        }
                    }
                }
                Incoming::SyncStep1(sv) => c.send(sync_step2(&doc, &sv)).await?,
                _ => {}
            }
        }
    }
    c.close().await;
    Ok(())
}

/// Runs the workload; one row.
pub async fn run_row(target: &Target, trace: Arc<Trace>, run_id: &str, p: &EchoParams) -> Row {
    let mut row = Row::new(
        "echo",
        &format!("1 writer, {} echo clients", p.echoers),
        &target.name,
    );
    match run(target, trace, run_id, p, &mut row).await {
        Ok(()) => {}
        Err(e) => row.note = format!("error: {e}"),
    }
    row
}

async fn run(
    target: &Target,
    trace: Arc<Trace>,
    run_id: &str,
    p: &EchoParams,
    row: &mut Row,
) -> anyhow::Result<()> {
    let doc = format!("echo-{run_id}");
    target.prepare(&[&doc]).await?;
    let endpoint = target.endpoint(&doc);
    let ledger = Arc::new(Ledger::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let observer_copies = Arc::new(AtomicU64::new(0));
    let all_copies = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..=p.echoers {
        let c = Conn::connect(&endpoint).await?;
        let copies = if i == 0 {
            observer_copies.clone()
        } else {
            Arc::new(AtomicU64::new(0))
        };
        let all = all_copies.clone();
        let (ledger, stop) = (ledger.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let r = listen(c, ledger, copies.clone(), i > 0, stop).await;
            all.fetch_add(copies.load(Ordering::Relaxed), Ordering::Relaxed);
            r
        }));
    }
    // The writer counts copies of its own edits coming back too.
    let mut writer = Conn::connect(&endpoint).await?;
    let mut typist = Typist::new(client_id_base());
    writer
        .join(typist.doc(), None, Duration::from_secs(30), |_| {})
        .await?;
    // Let the listeners finish joining before the first edit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored0 = target.stored_records().await;
    let meter = UsageMeter::start(target.pid);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / p.rate.max(0.1)));
    let mut writer_copies = 0u64;
    let mut matches = Vec::new();
    let mut handle = |msgs: Vec<Incoming>, writer_copies: &mut u64| {
        for m in msgs {
            if let Incoming::Update(u) = m
                && let Ok(ids) = UpdateIds::of(&u)
            {
                matches.clear();
                ledger.lookup(&ids, &mut matches);
                *writer_copies += matches.len() as u64;
            }
        }
    };
    let mut sent = 0;
    while sent < p.edits {
        tokio::select! {
            _ = tick.tick() => {
                let update = typist.next_update(&trace);
                if let Some(key) = UpdateIds::of(&update).ok().and_then(|ids| ids.key()) {
                    ledger.record(key, 0, Instant::now());
                    writer.send(update_message(update)).await?;
                    sent += 1;
                }
            }
            m = writer.recv() => handle(m?, &mut writer_copies),
        }
    }
    // Drain: until the observer has every edit and the counts stop moving for 1 s (at most 15 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = (u64::MAX, Instant::now());
    while Instant::now() < deadline {
        let now = observer_copies.load(Ordering::Relaxed) + writer_copies;
        if now != last.0 {
            last = (now, Instant::now());
        } else if observer_copies.load(Ordering::Relaxed) >= sent as u64
            && last.1.elapsed() > Duration::from_secs(1)
        {
            break;
        }
        tokio::select! {
            m = writer.recv() => handle(m?, &mut writer_copies),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    row.usage = meter.finish();
    let stored1 = target.stored_records().await;
    let _ = stop_tx.send(true);
    let mut errors = Vec::new();
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            errors.push(e.to_string());
        }
    }
    writer.close().await;
    let edits = sent as f64;
    let observer = observer_copies.load(Ordering::Relaxed);
    let total = all_copies.load(Ordering::Relaxed) + writer_copies;
    let stored = match (stored0, stored1) {
        (Some(a), Some(b)) => Some((b - a) / edits),
        _ => None,
    };
    row.delivered = Some(total);
    row.rate = Some(total as f64 / edits);
    row.rate_unit = "deliv/edit".into();
    row.missing = Some((sent as u64).saturating_sub(observer.min(sent as u64)));
    row.ok = errors.is_empty() && observer >= sent as u64;
    row.note = format!(
        "{sent} edits; observer got {:.2} copies/edit (ideal 1); all clients {:.2}/edit (ideal {}); writer got back {writer_copies}; stored records/edit {}",
        observer as f64 / edits,
        total as f64 / edits,
        p.echoers + 1,
        stored.map_or("- (no counter on /metrics)".to_string(), |s| format!(
            "{s:.2} (ideal 1; /metrics {})",
            target.stored_metric.as_deref().unwrap_or("")
        )),
    );
    if let Some(e) = errors.first() {
        row.note.push_str(&format!("; error: {e}"));
    }
    row.detail = serde_json::json!({
        "params": p, "edits": sent, "observer_copies": observer, "all_copies": total,
        "writer_copies": writer_copies, "stored_per_edit": stored, "errors": errors,
    });
    Ok(())
}
