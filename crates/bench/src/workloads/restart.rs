//! Restart recovery: write a document (every update confirmed by a second
//! peer), SIGKILL the server, start it again, and time until `/healthz`
//! answers and until a fresh client completes a full sync; the content must
//! be what was written. Needs a server the bench started and that keeps
//! data (the reference server keeps none, so it is skipped there).

use std::sync::Arc;
use std::time::Duration;

use crate::measure::Percentiles;
use crate::report::Row;
use crate::target::Target;
use crate::workloads::throughput::{fetch_text, stream};

/// The restart row.
pub async fn run_row(
    target: &mut Target,
    updates: Arc<Vec<Vec<u8>>>,
    expected_text: &str,
    run_id: &str,
) -> Row {
    let mut row = Row::new(
        "restart",
        &format!("SIGKILL after {} updates", updates.len()),
        &target.name,
    );
    if !target.persistent || !target.restartable() {
        row.note = "skipped: server keeps no data or was not started by the bench".into();
        row.ok = true;
        return row;
    }
    let doc = format!("restart-{run_id}");
    let written = stream(target, &doc, updates.clone(), 512, Duration::from_secs(20)).await;
    if let Some(e) = written.error {
        row.note = format!("write failed: {e}");
        return row;
    }
    let killed_at = match target.kill_and_restart() {
        Ok(at) => at,
        Err(e) => {
            row.note = format!("restart failed: {e}");
            return row;
        }
    };
    let healthy = match target.wait_healthy(Duration::from_secs(30)).await {
        Ok(_) => killed_at.elapsed(),
        Err(e) => {
            row.note = format!("not healthy after restart: {e}");
            return row;
        }
    };
    let (text, bytes) = match fetch_text(target, &doc).await {
        Ok(t) => t,
        Err(e) => {
            row.note = format!("sync after restart failed: {e}");
            return row;
        }
    };
    let synced = killed_at.elapsed();
    let intact = text == expected_text;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    row.latency = Some(Percentiles {
        n: 1,
        p50_ms: ms(healthy),
        p95_ms: ms(synced),
        p99_ms: ms(synced),
        max_ms: ms(synced),
    });
    row.ok = intact;
    row.note = format!(
        "healthz {:.1} ms, first full sync {:.1} ms after restart ({} B); content {}",
        ms(healthy),
        ms(synced),
        bytes,
        if intact {
            "intact"
        } else {
            "LOST OR DIFFERENT"
        }
    );
    row.detail = serde_json::json!({
        "healthz_ms": ms(healthy), "first_sync_ms": ms(synced), "state_bytes": bytes,
        "intact": intact, "chars": text.len(), "expected_chars": expected_text.len(),
        "write_updates_per_s": written.updates_per_s,
    });
    row
}
