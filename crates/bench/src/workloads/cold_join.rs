//! Cold join: documents holding a large state (the automerge-paper final
//! document) are stored; then the time from opening the WebSocket to a
//! complete SyncStep2 is measured for single joiners (one after another)
//! and for many concurrent joiners of different documents.
//!
//! When the bench controls a persistent server it restarts it (its stop signal)
//! between seeding and joining, so every join loads its document from
//! storage. Otherwise the documents are still in the server's memory and
//! the join is warm; the row says which.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conn::Conn;
use crate::measure::{Percentiles, UsageMeter};
use crate::protocol::{Incoming, sync_step1, update_message};
use crate::report::Row;
use crate::target::Target;
use crate::workloads::throughput::text_of_state;

/// Cold-join sizing.
#[derive(Debug, Clone, Serialize)]
pub struct ColdJoinParams {
    /// Documents joined one at a time.
    pub single: usize,
    /// Documents joined all at once.
    pub concurrent: usize,
}

/// One join: how long, and what arrived.
struct Joined {
    micros: u32,
    state: Vec<u8>,
}

async fn join_once(target: &Target, doc: &str) -> Result<Joined, String> {
    let start = Instant::now();
    let mut c = Conn::connect(&target.endpoint(doc))
        .await
        .map_err(|e| e.to_string())?;
    let local = yrs::Doc::new();
    let state = c
        .join(&local, None, Duration::from_secs(60), |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let micros = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
    c.close().await;
    Ok(Joined { micros, state })
}

/// Stores `state` (one update) as the content of `doc`, then asks the server (on the same
/// connection, so after the update) for its whole state and checks it.
pub async fn seed(target: &Target, doc: &str, state: &[u8], end_text: &str) -> Result<(), String> {
    target.prepare(&[doc]).await.map_err(|e| e.to_string())?;
    let mut c = Conn::connect(&target.endpoint(doc))
        .await
        .map_err(|e| e.to_string())?;
    let empty = yrs::Doc::new();
    c.join(&empty, None, Duration::from_secs(30), |_| {})
        .await
        .map_err(|e| e.to_string())?;
    c.send(update_message(state.to_vec()))
        .await
        .map_err(|e| e.to_string())?;
    c.send(sync_step1(&empty))
        .await
        .map_err(|e| e.to_string())?;
    let back = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            for m in c.recv().await? {
                if let Incoming::SyncStep2(s) = m {
                    return Ok::<_, crate::conn::ConnError>(s);
                }
            }
        }
    })
    .await
    .map_err(|_| format!("no SyncStep2 for {doc} after seeding"))?
    .map_err(|e| e.to_string())?;
    c.close().await;
    let text = text_of_state(&back);
    if text != end_text {
        return Err(format!(
            "seeded document {doc} reads back {} chars, expected {}",
            text.len(),
            end_text.len()
        ));
    }
    Ok(())
}

/// Seeds, optionally restarts, joins; returns the two rows (single, concurrent).
pub async fn run_rows(
    target: &mut Target,
    state: Arc<Vec<u8>>,
    end_text: &str,
    run_id: &str,
    p: &ColdJoinParams,
) -> Vec<Row> {
    let docs: Vec<String> = (0..p.single + p.concurrent)
        .map(|i| format!("cold-{run_id}-{i}"))
        .collect();
    let mut seed_error = None;
    for d in &docs {
        if let Err(e) = seed(target, d, &state, end_text).await {
            seed_error = Some(e);
            break;
        }
    }
    let cold = target.persistent && target.restartable();
    let mut restart_error = None;
    if cold && seed_error.is_none() {
        restart_error = target
            .stop_gracefully_and_restart()
            .await
            .err()
            .map(|e| e.to_string());
    }
    let mode = if cold {
        "cold (server restarted, loads from storage)"
    } else {
        "warm (documents in server memory)"
    };

    let mut rows = Vec::new();
    let phases: [(&str, &[String]); 2] = [
        ("1 joiner", &docs[..p.single]),
        (&format!("{} concurrent", p.concurrent), &docs[p.single..]),
    ];
    for (i, (label, set)) in phases.iter().enumerate() {
        let meter = UsageMeter::start(target.pid);
        let results: Vec<Result<Joined, String>> = if i == 0 {
            let mut v = Vec::new();
            for d in set.iter() {
                v.push(join_once(target, d).await);
            }
            v
        } else {
            let t: &Target = target;
            futures_util::future::join_all(set.iter().map(|d| join_once(t, d))).await
        };
        let usage = meter.finish();
        let mut micros = Vec::new();
        let mut errors = Vec::new();
        let mut wrong = 0;
        for r in results {
            match r {
                Ok(j) => {
                    if text_of_state(&j.state) != end_text {
                        wrong += 1;
                    }
                    micros.push(j.micros);
                }
                Err(e) => errors.push(e),
            }
        }
        let latency = Percentiles::of_us(&mut micros);
        let first_error = seed_error
            .clone()
            .or(restart_error.clone())
            .or(errors.first().cloned());
        let ok = first_error.is_none() && wrong == 0 && micros.len() == set.len();
        let mut note = format!(
            "{mode}; {} B state; {} of {} docs intact",
            state.len(),
            micros.len() - wrong,
            set.len()
        );
        if let Some(e) = &first_error {
            note.push_str(&format!("; error: {e}"));
        }
        rows.push(Row {
            workload: "cold-join".into(),
            point: label.to_string(),
            server: target.name.clone(),
            latency: Some(latency),
            rate: None,
            rate_unit: String::new(),
            missing: None,
            delivered: None,
            usage,
            ok,
            note,
            detail: serde_json::json!({ "params": p, "cold": cold, "state_bytes": state.len(), "wrong": wrong, "errors": errors }),
        });
    }
    rows
}
