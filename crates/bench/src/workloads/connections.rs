//! Connections: ramp up idle WebSocket connections (two per room, each
//! fully joined), and at each step report the server's RSS per connection
//! and the p99 of a small probe room (fan-out 1×5) running under that load.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::conn::Conn;
use crate::measure::{nofile_limit, status_mib};
use crate::report::Row;
use crate::target::Target;
use crate::trace::Trace;
use crate::workloads::fanout::{self, FanoutParams};

/// Connection ramp sizing.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsParams {
    /// Cumulative connection counts to stop at and measure.
    pub steps: Vec<usize>,
    /// The probe fan-out run at each step.
    pub probe: FanoutParams,
    /// Connections being opened at once.
    pub parallel_opens: usize,
}

/// The rows, one per step.
pub async fn run_rows(
    target: &Target,
    trace: Arc<Trace>,
    run_id: &str,
    p: &ConnectionsParams,
) -> Vec<Row> {
    let mut rows = Vec::new();
    // Each connection costs one fd here; leave room for the probe and files.
    let limit = nofile_limit().unwrap_or(1024) as usize;
    let cap = limit.saturating_sub(256);
    let pid = target.pid.map(|p| p.to_string());
    let rss = || pid.as_ref().and_then(|p| status_mib(p, "VmRSS"));
    let baseline = rss();
    let (hold_tx, hold_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(p.parallel_opens.max(1)));
    let mut held = Vec::new();
    let mut opened = 0usize;
    let mut failures = 0usize;
    let mut first_error: Option<String> = None;
    for &step in &p.steps {
        let want = step.min(cap);
        let ramp = tokio::time::Instant::now();
        let mut batch = Vec::new();
        let rooms: Vec<String> = (opened / 2..want.div_ceil(2))
            .map(|r| format!("idle-{run_id}-{r}"))
            .collect();
        if let Err(e) = target.prepare(&rooms).await {
            first_error.get_or_insert(format!("creating documents: {e}"));
        }
        while opened < want {
            let permit = gate.clone().acquire_owned().await;
            let endpoint = target.endpoint(&format!("idle-{run_id}-{}", opened / 2));
            let mut hold = hold_rx.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
            held.push(tokio::spawn(async move {
                let joined = async {
                    let mut c = Conn::connect(&endpoint).await?;
                    c.join(&yrs::Doc::new(), None, Duration::from_secs(60), |_| {})
                        .await?;
                    Ok::<_, crate::conn::ConnError>(c)
                }
                .await;
                drop(permit);
                match joined {
                    Ok(mut c) => {
                        let _ = ready_tx.send(Ok(()));
                        // Idle: read (answers pings) until told to let go; send
                        // what the dialect needs to be kept (Hocuspocus' idle timeout).
                        let keepalive = c.dialect().keepalive();
                        let period = keepalive
                            .as_ref()
                            .map_or(Duration::from_secs(3600), |k| k.0);
                        let mut tick =
                            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        loop {
                            tokio::select! {
                                r = c.recv() => if r.is_err() { break },
                                _ = hold.changed() => break,
                                _ = tick.tick(), if keepalive.is_some() => {
                                    if let Some((_, frame)) = &keepalive
                                        && c.send_frame(frame.clone()).await.is_err()
                                    {
                                        break;
                                    }
                                }
                            }
                        }
                        drop(c);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            }));
            batch.push(ready_rx);
            opened += 1;
        }
        for r in batch {
            match r.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failures += 1;
                    first_error.get_or_insert(e);
                }
                Err(_) => failures += 1,
            }
        }
        let ramp_s = ramp.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_now = rss();
        let per_conn_kib = match (rss_now, baseline) {
            (Some(now), Some(base)) if opened > 0 => Some((now - base) * 1024.0 / opened as f64),
            _ => None,
        };
        let probe = fanout::run_row(
            target,
            trace.clone(),
            &p.probe,
            &format!("{run_id}-probe{opened}"),
        )
        .await;
        let live = opened - failures;
        let mut note = format!(
            "{live} idle conns in {} rooms (opened in {ramp_s:.1} s); RSS {} MiB = {} KiB/conn over baseline {} MiB; probe {}",
            opened.div_ceil(2),
            rss_now.map_or("-".into(), |v| format!("{v:.1}")),
            per_conn_kib.map_or("-".into(), |v| format!("{v:.1}")),
            baseline.map_or("-".into(), |v| format!("{v:.1}")),
            p.probe.label(),
        );
        if want < step {
            note.push_str(&format!(
                "; capped at {want} by fd limit {limit} (raise ulimit -n)"
            ));
        }
        if let Some(e) = &first_error {
            note.push_str(&format!("; {failures} failed: {e}"));
        }
        // The probe room's disk probe, as its own fan-out row has it.
        let disk = probe.detail["disk_syncs"].clone();
        if let (Some(p99), Some(max)) = (disk["p99_ms"].as_f64(), disk["max_ms"].as_f64()) {
            note.push_str(&fanout::disk_note(p99, max));
        }
        let mut usage = probe.usage;
        usage.server_rss_peak_mib = match (usage.server_rss_peak_mib, rss_now) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        rows.push(Row {
            workload: "connections".into(),
            point: format!("{step} idle"),
            server: target.name.clone(),
            latency: probe.latency,
            rate: Some(live as f64),
            rate_unit: "conns".into(),
            missing: probe.missing,
            delivered: probe.delivered,
            usage,
            ok: probe.ok && failures == 0 && want == step,
            note,
            detail: serde_json::json!({
                "step": step, "opened": opened, "failures": failures, "rss_mib": rss_now,
                "baseline_rss_mib": baseline, "rss_per_conn_kib": per_conn_kib, "ramp_s": ramp_s,
                "probe": probe.detail, "disk_syncs": disk,
            }),
        });
    }
    let _ = hold_tx.send(true);
    for h in held {
        let _ = h.await;
    }
    rows
}
