//! Editing traces: real per-keystroke histories (josephg/editing-traces, gzipped
//! JSON) or, when the file is absent, a deterministic generated one.
//!
//! A trace is a list of transactions, each a list of `(pos, delete_count,
//! insert_text)` patches. [`Typist`] replays a trace into a yrs document one
//! transaction at a time and hands back each transaction's v1 update: the
//! same bytes a real editor would send for that keystroke.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yrs::{ClientID, Doc, GetString, Options, ReadTxn, Text, TextRef, Transact};

/// Name of the root text type every bench client edits (y-codemirror's default).
pub const TEXT_NAME: &str = "codemirror";

/// One edit: at `pos`, delete `delete` characters, then insert `insert`.
#[derive(Debug, Clone, Deserialize)]
pub struct Patch(pub u32, pub u32, pub String);

/// One transaction of a trace: the patches one keystroke (or paste) produced.
#[derive(Debug, Clone, Deserialize)]
pub struct Txn {
    /// Patches in application order.
    pub patches: Vec<Patch>,
}

/// A whole editing history and the text it must produce.
#[derive(Debug, Clone, Deserialize)]
pub struct Trace {
    /// Text the history starts from (empty for every trace we use).
    #[serde(rename = "startContent", default)]
    pub start_content: String,
    /// Text after every transaction is applied: the replay check.
    #[serde(rename = "endContent")]
    pub end_content: String,
    /// The transactions, in order.
    pub txns: Vec<Txn>,
}

/// Where a trace came from, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceSource {
    /// Read from this file.
    File(PathBuf),
    /// Generated because the file was missing.
    Generated,
}

impl Trace {
    /// Reads a gzipped JSON trace.
    pub fn read(path: &Path) -> anyhow::Result<Trace> {
        let file = std::fs::File::open(path)?;
        let mut json = String::new();
        flate2::read::GzDecoder::new(file).read_to_string(&mut json)?;
        let trace: Trace = serde_json::from_str(&json)?;
        Ok(trace)
    }

    /// Reads `dir/name`, or generates `fallback_txns` transactions of synthetic
    /// typing when that file does not exist.
    pub fn load_or_generate(
        dir: &Path,
        name: &str,
        fallback_txns: usize,
    ) -> anyhow::Result<(Trace, TraceSource)> {
        let path = dir.join(name);
        if path.exists() {
            Ok((Trace::read(&path)?, TraceSource::File(path)))
        } else {
            Ok((
                Trace::generate(fallback_txns, 0x5eed),
                TraceSource::Generated,
            ))
        }
    }

    /// A deterministic synthetic history: mostly typing at a moving cursor,
    /// some backspaces and occasional cursor jumps.
    pub fn generate(txns: usize, seed: u64) -> Trace {
        let mut rng = Lcg(seed);
        let mut text: Vec<u8> = Vec::new();
        let mut cursor = 0usize;
        let mut out = Vec::with_capacity(txns);
        for _ in 0..txns {
            let roll = rng.next_u64() % 100;
            if roll < 3 && !text.is_empty() {
                cursor = (rng.next_u64() as usize) % (text.len() + 1);
                continue_typing(&mut rng, &mut text, &mut cursor, &mut out);
            } else if roll < 18 && cursor > 0 {
                cursor -= 1;
                text.remove(cursor);
                out.push(Txn {
                    patches: vec![Patch(cursor as u32, 1, String::new())],
                });
            } else {
                continue_typing(&mut rng, &mut text, &mut cursor, &mut out);
            }
        }
        Trace {
            start_content: String::new(),
            end_content: String::from_utf8_lossy(&text).into_owned(),
            txns: out,
        }
    }

    /// Applies every patch to a plain string: the reference replay.
    pub fn replay_plain(&self) -> String {
        let mut text = self.start_content.clone().into_bytes();
        for txn in &self.txns {
            for Patch(pos, del, ins) in &txn.patches {
                let pos = *pos as usize;
                text.splice(pos..pos + *del as usize, ins.bytes());
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

fn continue_typing(rng: &mut Lcg, text: &mut Vec<u8>, cursor: &mut usize, out: &mut Vec<Txn>) {
    const ALPHABET: &[u8] = b"etaoin shrdlu cmfwyp vbgkqjxz ETAOIN.,\n";
    let ch = ALPHABET[(rng.next_u64() as usize) % ALPHABET.len()];
    text.insert(*cursor, ch);
    out.push(Txn {
        patches: vec![Patch(*cursor as u32, 0, (ch as char).to_string())],
    });
    *cursor += 1;
}

/// A tiny deterministic generator (no `rand` dependency needed for this).
pub struct Lcg(pub u64);

impl Lcg {
    /// Next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Replays a trace into its own yrs document, one transaction per call,
/// producing the v1 update of each transaction.
pub struct Typist {
    doc: Doc,
    text: TextRef,
    next_txn: usize,
}

impl Typist {
    /// A typist whose document has the given client id (unique per bench client).
    pub fn new(client_id: u64) -> Typist {
        let doc = Doc::with_options(Options::with_client_id(ClientID::new(client_id)));
        let text = doc.get_or_insert_text(TEXT_NAME);
        Typist {
            doc,
            text,
            next_txn: 0,
        }
    }

    /// The document being typed into.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// Applies the next transaction of `trace` (wrapping around to an empty
    /// text when the trace ends) and returns its update, skipping
    /// transactions that change nothing.
    pub fn next_update(&mut self, trace: &Trace) -> Vec<u8> {
        loop {
            if self.next_txn >= trace.txns.len() {
                self.restart();
            }
            let txn = &trace.txns[self.next_txn];
            self.next_txn += 1;
            let update = self.apply(txn);
            if update.len() > 2 {
                return update;
            }
        }
    }

    /// Applies one transaction and returns its v1 update.
    pub fn apply(&mut self, txn: &Txn) -> Vec<u8> {
        let mut tx = self.doc.transact_mut();
        for Patch(pos, del, ins) in &txn.patches {
            if *del > 0 {
                self.text.remove_range(&mut tx, *pos, *del);
            }
            if !ins.is_empty() {
                self.text.insert(&mut tx, *pos, ins);
            }
        }
        tx.encode_update_v1()
    }

    /// Clears the text so the trace can be replayed again from its start.
    fn restart(&mut self) {
        let mut tx = self.doc.transact_mut();
        let len = self.text.len(&tx);
        if len > 0 {
            self.text.remove_range(&mut tx, 0, len);
        }
        drop(tx);
        self.next_txn = 0;
    }

    /// Current text of the typist's document.
    pub fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }
}

/// Every transaction of `trace` as one update each, from a single typist
/// (used by the throughput and cold-join workloads). Returns the updates and
/// the final text and whole state (one v1 update) of the typist's document.
pub fn all_updates(trace: &Trace, client_id: u64) -> (Vec<Vec<u8>>, String, Vec<u8>) {
    let mut typist = Typist::new(client_id);
    let mut updates = Vec::with_capacity(trace.txns.len());
    for txn in &trace.txns {
        let update = typist.apply(txn);
        if update.len() > 2 {
            updates.push(update);
        }
    }
    let state = typist
        .doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    (updates, typist.text(), state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_trace_replays_to_its_end_content() {
        let trace = Trace::generate(5_000, 7);
        assert_eq!(trace.replay_plain(), trace.end_content);
        let (updates, text, _) = all_updates(&trace, 42);
        assert_eq!(text, trace.end_content);
        assert!(!updates.is_empty());
    }
}
