//! Store microbenchmarks: one listing page among 100k documents, durable
//! append throughput with group commit, load of the compacted
//! automerge-paper document, and compaction (`TANDEM_BENCH_ONLY_LIST=1`
//! runs only the listing).
//!
//! Run: `cargo bench -p tandem-store` (takes a few minutes). The trace is
//! read from `$TANDEM_TRACE`, else `automerge-paper.json.gz` in `$TANDEM_TRACES`, else in `<workspace>/target/traces/`;
//! without it a generated trace of the same shape is used. Data directories
//! go to `$TANDEM_BENCH_DIR` (default: the system temp dir, which must be
//! a real disk for the durable numbers to mean anything).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tandem_store::{DocId, Durability, Store, StoreConfig};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact};

/// Per-keystroke v1 updates of one editing session.
struct Trace {
    name: String,
    updates: Vec<Vec<u8>>,
}

fn trace_path() -> PathBuf {
    std::env::var_os("TANDEM_TRACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("TANDEM_TRACES")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/traces")
                })
                .join("automerge-paper.json.gz")
        })
}

/// `(pos, delete count, inserted text)` patches, in order.
type Patches = Vec<(u32, u32, String)>;

fn read_trace(path: &PathBuf) -> Option<(Patches, String)> {
    let file = std::fs::File::open(path).ok()?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .ok()?;
    let value: serde_json::Value = serde_json::from_str(&json).ok()?;
    let mut patches = Vec::new();
    for txn in value["txns"].as_array()? {
        for patch in txn["patches"].as_array()? {
            let pos = patch[0].as_u64()? as u32;
            let del = patch[1].as_u64()? as u32;
            patches.push((pos, del, patch[2].as_str()?.to_string()));
        }
    }
    Some((patches, value["endContent"].as_str()?.to_string()))
}

/// A deterministic stand-in: ~100k keystrokes, mostly typing, some deletes.
fn generated_patches() -> Patches {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut len = 0u32;
    let mut patches = Vec::new();
    for _ in 0..100_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pos = if len == 0 {
            0
        } else {
            (seed % u64::from(len + 1)) as u32
        };
        if seed.is_multiple_of(5) && pos < len {
            patches.push((pos, 1, String::new()));
            len -= 1;
        } else {
            patches.push((pos, 0, ((b'a' + (seed % 26) as u8) as char).to_string()));
            len += 1;
        }
    }
    patches
}

fn load_trace() -> Trace {
    let path = trace_path();
    let (name, patches, expected) = match read_trace(&path) {
        Some((patches, end)) => ("automerge-paper".to_string(), patches, Some(end)),
        None => {
            eprintln!(
                "trace {} not found: using a generated trace",
                path.display()
            );
            ("generated".to_string(), generated_patches(), None)
        }
    };
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("text");
    let mut updates = Vec::with_capacity(patches.len());
    for (pos, del, ins) in &patches {
        let mut txn = doc.transact_mut();
        if *del > 0 {
            text.remove_range(&mut txn, *pos, *del);
        }
        if !ins.is_empty() {
            text.insert(&mut txn, *pos, ins);
        }
        updates.push(txn.encode_update_v1());
    }
    if let Some(expected) = expected {
        assert_eq!(
            text.get_string(&doc.transact()),
            expected,
            "trace replay diverged"
        );
    }
    eprintln!("trace {name}: {} per-keystroke updates", updates.len());
    Trace { name, updates }
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TANDEM_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn doc(name: &str) -> DocId {
    DocId::new(name).unwrap()
}

/// Appends `count` updates (cycling through the trace), then awaits all:
/// one group-commit round trip per batch.
/// Past the end of the trace it wraps to its second half.
fn append_batch(store: &Store, id: &DocId, trace: &Trace, cursor: &mut usize, count: usize) {
    let mut tickets = Vec::with_capacity(count);
    for _ in 0..count {
        if *cursor >= trace.updates.len() {
            *cursor = trace.updates.len() / 2;
        }
        tickets.push(store.append(id, &trace.updates[*cursor]).unwrap());
        *cursor += 1;
    }
    for ticket in tickets {
        ticket.wait_durable().unwrap();
    }
}

/// Appends `count` updates (cycling like `append_batch`) as ONE record with
/// `Store::append_batch`, then awaits it: what a busy room does per batch.
fn append_one_record(store: &Store, id: &DocId, trace: &Trace, cursor: &mut usize, count: usize) {
    let mut updates: Vec<&[u8]> = Vec::with_capacity(count);
    for _ in 0..count {
        if *cursor >= trace.updates.len() {
            *cursor = trace.updates.len() / 2;
        }
        updates.push(&trace.updates[*cursor]);
        *cursor += 1;
    }
    store
        .append_batch(id, &updates)
        .unwrap()
        .wait_durable()
        .unwrap();
}

fn appends(c: &mut Criterion, trace: &Trace) {
    let dir = bench_dir();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut group = c.benchmark_group("append_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    // Updates from one room, awaited together: group commit across a batch.
    for batch in [1usize, 100, 1000] {
        let id = doc(&format!("batch-{batch}"));
        let mut cursor = 0;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("batch_awaited_together", batch), |b| {
            b.iter(|| append_batch(&store, &id, trace, &mut cursor, batch));
        });
    }

    // The same batches as one record each (`append_batch`).
    for batch in [100usize, 1000] {
        let id = doc(&format!("record-{batch}"));
        let mut cursor = 0;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("append_batch_one_record", batch), |b| {
            b.iter(|| append_one_record(&store, &id, trace, &mut cursor, batch));
        });
    }

    // Many rooms at once, each appending one update and waiting for it
    // before the next (the gateway's pattern): group commit across threads
    // and across async tasks.
    let per_writer = 200;
    let updates = Arc::new(trace.updates[..per_writer].to_vec());
    let writers = 16;
    group.throughput(Throughput::Elements((writers * per_writer) as u64));
    group.bench_function(BenchmarkId::new("threads_each_waiting", writers), |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for w in 0..writers {
                    let (store, updates) = (store.clone(), Arc::clone(&updates));
                    s.spawn(move || {
                        let id = doc(&format!("room-{w}"));
                        for update in updates.iter() {
                            store.append(&id, update).unwrap().wait_durable().unwrap();
                        }
                    });
                }
            });
        });
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tasks = 256;
    group.throughput(Throughput::Elements((tasks * per_writer) as u64));
    group.bench_function(BenchmarkId::new("async_tasks_each_awaiting", tasks), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut handles = Vec::new();
                for t in 0..tasks {
                    let (store, updates) = (store.clone(), Arc::clone(&updates));
                    handles.push(tokio::spawn(async move {
                        let id = doc(&format!("task-{t}"));
                        for update in updates.iter() {
                            store.append(&id, update).unwrap().durable().await.unwrap();
                        }
                    }));
                }
                for handle in handles {
                    handle.await.unwrap();
                }
            });
        });
    });
    let stats = store.commit_stats();
    eprintln!(
        "group commit: {} durable writes in {} disk syncs (mean batch {:.1})",
        stats.durable_writes,
        stats.syncs,
        stats.durable_writes as f64 / stats.syncs.max(1) as f64
    );
    group.finish();
}

/// Appends the whole trace to `id` (relaxed, then one flush) and compacts,
/// printing how long each took.
fn prepare_compacted(store: &Store, id: &DocId, trace: &Trace) {
    let started = Instant::now();
    for update in &trace.updates {
        let _ = store.append(id, update).unwrap();
    }
    store.flush().unwrap();
    let appended = started.elapsed();
    let started = Instant::now();
    let stats = store.compact(id).unwrap();
    eprintln!(
        "{}: appended {} updates in {:.2?} ({:.0}/s, relaxed); full compaction {:.2?}, snapshot {} bytes",
        trace.name,
        trace.updates.len(),
        appended,
        trace.updates.len() as f64 / appended.as_secs_f64(),
        started.elapsed(),
        stats.snapshot_bytes
    );
}

fn load_and_compact(c: &mut Criterion, trace: &Trace) {
    let dir = bench_dir();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::Relaxed {
        flush_every_ms: 1000,
    };
    let store = Store::open(config).unwrap();
    let id = doc("paper");
    prepare_compacted(&store, &id, trace);

    let mut group = c.benchmark_group("store");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function(format!("load_compacted_{}", trace.name), |b| {
        b.iter_with_large_drop(|| store.load(&id).unwrap());
    });

    // The steady state: a compacted document (first half of the trace) and
    // the next 1000 keystrokes (the default threshold) merged into it.
    let window = 1000;
    let half = trace.updates.len() / 2;
    let target = doc("paper-window");
    let first_half = Doc::new();
    for update in &trace.updates[..half] {
        let update = yrs::Update::decode_v1(update).unwrap();
        first_half.transact_mut().apply_update(update).unwrap();
    }
    let state = first_half
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    store.import(&target, &state).unwrap();
    store.compact(&target).unwrap();
    let mut cursor = half;
    group.bench_function(
        format!("compact_{window}_updates_into_{}", trace.name),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    append_batch(&store, &target, trace, &mut cursor, window);
                    let started = Instant::now();
                    store.compact(&target).unwrap();
                    total += started.elapsed();
                }
                total
            });
        },
    );
    group.finish();
}

/// Documents in the listing benchmark.
const LISTED_DOCS: u32 = 100_000;

/// One page of `list_page` (default size, first and middle of the id
/// range, and a prefix) among 100k documents: O(page), not O(documents).
fn list_pages(c: &mut Criterion) {
    let dir = bench_dir();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::Relaxed {
        flush_every_ms: 1000,
    };
    let store = Store::open(config).unwrap();
    let update = {
        let editor = Doc::with_client_id(1);
        let text = editor.get_or_insert_text("content");
        text.insert(&mut editor.transact_mut(), 0, "x");
        editor
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    };
    for i in 0..LISTED_DOCS {
        let _ = store.append(&doc(&format!("doc-{i:06}")), &update).unwrap();
    }
    store.flush().unwrap();
    let mut group = c.benchmark_group(format!("list_page of {LISTED_DOCS} documents"));
    let middle = doc(&format!("doc-{:06}", LISTED_DOCS / 2));
    group.bench_function("first page (100)", |b| {
        b.iter(|| assert_eq!(store.list_page("", None, 100).unwrap().docs.len(), 100))
    });
    group.bench_function("page after a cursor (100)", |b| {
        b.iter(|| {
            let page = store.list_page("", Some(&middle), 100).unwrap();
            assert_eq!(page.docs.len(), 100)
        })
    });
    group.bench_function("prefix page (1000)", |b| {
        b.iter(|| {
            assert_eq!(
                store.list_page("doc-07", None, 1000).unwrap().docs.len(),
                1000
            )
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    list_pages(c);
    if std::env::var_os("TANDEM_BENCH_ONLY_LIST").is_some() {
        return;
    }
    let trace = load_trace();
    appends(c, &trace);
    load_and_compact(c, &trace);
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
