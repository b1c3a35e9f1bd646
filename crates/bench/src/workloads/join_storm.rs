//! Join storm: one document holds a large text (15 MB by default, typed in
//! 1 KiB pastes at pseudo-random places, so it has many items, not one);
//! a seeding client keeps the room open, then N clients open a WebSocket at
//! the same moment and each waits for its complete SyncStep2. Reports the
//! join time (open → SyncStep2 received) p50/p99/max and the server's peak
//! RSS during the storm.
//!
//! Only one joiner's copy is decoded and compared with the text (decoding
//! 50 × 15 MB would make the bench, not the server, the bottleneck); the
//! others are checked by size.

use std::time::{Duration, Instant};

use serde::Serialize;
use yrs::{GetString, ReadTxn, StateVector, Text, Transact};

use crate::conn::{Conn, ConnError};
use crate::measure::{Percentiles, UsageMeter};
use crate::protocol::{Incoming, sync_step1, update_message};
use crate::report::Row;
use crate::target::Target;
use crate::trace::{Lcg, TEXT_NAME};
use crate::workloads::throughput::text_of_state;

/// Join-storm sizing.
#[derive(Debug, Clone, Serialize)]
pub struct JoinStormParams {
    /// Clients joining at once.
    pub joiners: usize,
    /// Size of the document's text in bytes.
    pub doc_bytes: usize,
}

/// A large text document as a few updates of about 1 MiB each (so no single
/// frame hits a server's message limit), and the text they produce.
pub fn big_text(bytes: usize, seed: u64) -> (Vec<Vec<u8>>, String) {
    const PASTE: usize = 1024;
    const UPDATE: usize = 1 << 20;
    let doc = yrs::Doc::with_client_id(seed % (1 << 31) + 1);
    let text = doc.get_or_insert_text(TEXT_NAME);
    let mut rng = Lcg(seed);
    let mut updates = Vec::new();
    let mut sv = StateVector::default();
    let mut len = 0u32;
    let mut pending = 0;
    while (len as usize) < bytes {
        let n = PASTE.min(bytes - len as usize);
        let chunk: String = (0..n)
            .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
            .collect();
        let at = (rng.next_u64() % (u64::from(len) + 1)) as u32;
        text.insert(&mut doc.transact_mut(), at, &chunk);
        len += n as u32;
        pending += n;
        if pending >= UPDATE || len as usize >= bytes {
            let txn = doc.transact();
            updates.push(txn.encode_state_as_update_v1(&sv));
            sv = txn.state_vector();
            pending = 0;
        }
    }
    let s = text.get_string(&doc.transact());
    (updates, s)
}

/// Waits for the next SyncStep2 on `c`, answering the server's SyncStep1.
async fn next_step2(c: &mut Conn, doc: &yrs::Doc) -> Result<Vec<u8>, ConnError> {
    loop {
        for m in c.recv().await? {
            match m {
                Incoming::SyncStep2(s) => return Ok(s),
                Incoming::SyncStep1(sv) => c.send(crate::protocol::sync_step2(doc, &sv)).await?,
                _ => {}
            }
        }
    }
}

/// Joins and sends `updates`, then asks for the whole state again and
/// checks its text. Returns the connection, kept open to hold the room.
async fn seed(target: &Target, doc: &str, updates: &[Vec<u8>], text: &str) -> anyhow::Result<Conn> {
    target.prepare(&[doc]).await?;
    let mut c = Conn::connect(&target.endpoint(doc)).await?;
    let empty = yrs::Doc::new();
    c.join(&empty, None, Duration::from_secs(30), |_| {})
        .await?;
    for u in updates {
        c.send(update_message(u.clone())).await?;
    }
    c.send(sync_step1(&empty)).await?;
    let back = tokio::time::timeout(Duration::from_secs(120), next_step2(&mut c, &empty))
        .await
        .map_err(|_| anyhow::anyhow!("no SyncStep2 after seeding {doc}"))??;
    let got = text_of_state(&back);
    anyhow::ensure!(
        got == text,
        "seeded {doc} reads back {} chars, expected {}",
        got.len(),
        text.len()
    );
    Ok(c)
}

/// Seeds the document, then runs the storm; one row.
pub async fn run_row(target: &Target, run_id: &str, p: &JoinStormParams) -> Row {
    let mut row = Row::new(
        "join-storm",
        &format!("{} joiners, {} MB text", p.joiners, p.doc_bytes / 1_000_000),
        &target.name,
    );
    let doc = format!("storm-{run_id}");
    let (updates, text) = big_text(p.doc_bytes, 0x5707_0001);
    let holder = match seed(target, &doc, &updates, &text).await {
        Ok(c) => c,
        Err(e) => {
            row.note = format!("seeding failed: {e}");
            return row;
        }
    };
    let endpoint = target.endpoint(&doc);
    let text = &text;
    let meter = UsageMeter::start(target.pid);
    let joins = futures_util::future::join_all((0..p.joiners).map(|i| {
        let endpoint = endpoint.clone();
        async move {
            let start = Instant::now();
            let mut c = Conn::connect(&endpoint).await?;
            let local = yrs::Doc::new();
            let state = c
                .join(&local, None, Duration::from_secs(120), |_| {})
                .await?;
            let micros = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
            // Decode one copy; the rest are held only until their size is known.
            let intact = if i == 0 {
                text_of_state(&state) == *text
            } else {
                true
            };
            let bytes = state.len();
            drop(state);
            c.close().await;
            Ok::<_, ConnError>((micros, bytes, intact))
        }
    }))
    .await;
    row.usage = meter.finish();
    holder.close().await;
    let mut micros = Vec::new();
    let mut errors = Vec::new();
    let mut sizes = Vec::new();
    let mut intact = true;
    for j in joins {
        match j {
            Ok((us, bytes, ok)) => {
                micros.push(us);
                sizes.push(bytes);
                intact &= ok;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let same_size = sizes.windows(2).all(|w| w[0] == w[1]);
    row.latency = Some(Percentiles::of_us(&mut micros));
    row.ok = errors.is_empty() && intact && same_size;
    row.note = format!(
        "warm room (a seeding client holds it open); {} of {} joined; state {} B; {}",
        micros.len(),
        p.joiners,
        sizes.first().copied().unwrap_or(0),
        if intact && same_size {
            "content intact"
        } else {
            "CONTENT DIFFERS"
        }
    );
    if let Some(e) = errors.first() {
        row.note.push_str(&format!("; error: {e}"));
    }
    row.detail = serde_json::json!({ "params": p, "errors": errors, "state_bytes": sizes.first() });
    row
}
