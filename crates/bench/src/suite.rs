//! `tandem-bench suite`: every workload against Tandem, then (when a
//! command for it is given) against the reference server in the same run;
//! prints one Markdown table, the Tandem/reference ratios, and writes
//! `results.json` with the machine description.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tandem_bench::report::{HEADER, Row, ratio_table, ratios};
use tandem_bench::target::Target;
use tandem_bench::workloads::cold_join::{self, ColdJoinParams};
use tandem_bench::workloads::connections::{self, ConnectionsParams};
use tandem_bench::workloads::fanout::{self, FanoutParams};
use tandem_bench::workloads::{restart, throughput};

use crate::{Common, Traces};

/// Suite options.
#[derive(Args, Clone)]
pub struct SuiteArgs {
    /// Command starting Tandem (`{port}`, `{data}` filled in).
    #[arg(long)]
    tandem_cmd: String,
    /// Tandem's WebSocket path prefix.
    #[arg(long, default_value = "/ws/")]
    tandem_prefix: String,
    /// Command starting the reference server (skipped when absent).
    #[arg(long)]
    reference_cmd: Option<String>,
    /// The reference server's WebSocket path prefix.
    #[arg(long, default_value = "/")]
    reference_prefix: String,
    /// Fan-out points.
    #[arg(long, value_delimiter = ',', default_value = "10x5@10,1x50@5,100x10@2")]
    points: Vec<String>,
    /// Connection ramp.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    steps: Vec<usize>,
    /// Concurrent cold joiners.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    /// Throughput in-flight window.
    #[arg(long, default_value_t = 4096)]
    window: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

/// The probe room the connections workload runs at each step.
pub fn probe_params(duration: Duration) -> FanoutParams {
    let mut p = FanoutParams::parse("1x5@10", duration.min(Duration::from_secs(5)))
        .expect("static point parses");
    p.drain = Duration::from_secs(3);
    p
}

/// The first 20,000 updates of the stream trace and the text they produce.
pub fn restart_slice(tr: &Traces) -> (Arc<Vec<Vec<u8>>>, String) {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    let n = tr.stream.len().min(20_000);
    let updates: Vec<Vec<u8>> = tr.stream[..n].to_vec();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text(tandem_bench::trace::TEXT_NAME);
    {
        let mut txn = doc.transact_mut();
        for u in &updates {
            if let Ok(u) = yrs::Update::decode_v1(u) {
                let _ = txn.apply_update(u);
            }
        }
    }
    let s = text.get_string(&doc.transact());
    (Arc::new(updates), s)
}

/// Restarts a server the bench started (same port and data), so each
/// workload starts from a fresh process: memory one workload left behind
/// (allocator caches, loaded rooms) does not count against the next.
async fn fresh(t: &mut Target) -> anyhow::Result<()> {
    if t.restartable() {
        t.stop_gracefully_and_restart().await?;
    }
    Ok(())
}

async fn run_all(
    t: &mut Target,
    a: &SuiteArgs,
    common: &Common,
    tr: &Traces,
    id: &str,
) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs_f64(common.duration);
    let mut rows = Vec::new();
    let emit = |rows: &mut Vec<Row>, r: Row| {
        println!("{}", r.markdown());
        rows.push(r);
    };
    for point in &a.points {
        let p = FanoutParams::parse(point, duration)?.with_awareness(common.awareness_hz);
        fresh(t).await?;
        emit(
            &mut rows,
            fanout::run_row(t, tr.typing.clone(), &p, id).await,
        );
    }
    let cp = ConnectionsParams {
        steps: a.steps.clone(),
        probe: probe_params(duration),
        parallel_opens: 64,
    };
    fresh(t).await?;
    for r in connections::run_rows(t, tr.typing.clone(), id, &cp).await {
        emit(&mut rows, r);
    }
    fresh(t).await?;
    emit(
        &mut rows,
        throughput::run_row(
            t,
            tr.stream.clone(),
            &tr.stream_text,
            &tr.stream_name,
            id,
            a.window,
        )
        .await,
    );
    fresh(t).await?;
    let jp = ColdJoinParams {
        single: 5,
        concurrent: a.concurrent,
    };
    for r in cold_join::run_rows(t, tr.big_state.clone(), &tr.stream_text, id, &jp).await {
        emit(&mut rows, r);
    }
    let (updates, text) = restart_slice(tr);
    emit(&mut rows, restart::run_row(t, updates, &text, id).await);
    Ok(rows)
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // Other work on the machine skews every number: record the load as the run starts.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    serde_json::json!({ "nproc": nproc, "model": model, "memory": mem, "kernel": kernel, "date": date, "loadavg": loadavg })
}

/// Runs the suite.
pub async fn run(a: SuiteArgs, common: Common, id: &str) -> anyhow::Result<()> {
    let machine = machine();
    println!(
        "Machine: {} cores, {}, {}, {}",
        machine["nproc"],
        machine["model"].as_str().unwrap_or(""),
        machine["memory"].as_str().unwrap_or(""),
        machine["date"].as_str().unwrap_or("")
    );
    let tr = Traces::load(&common.traces)?;
    println!("{HEADER}");
    let mut tandem = Target::spawn("tandem", &a.tandem_cmd, &a.tandem_prefix, true).await?;
    let tandem_rows = run_all(&mut tandem, &a, &common, &tr, &format!("{id}t")).await?;
    tandem.shutdown();
    let mut reference_rows = Vec::new();
    if let Some(cmd) = &a.reference_cmd {
        let mut reference = Target::spawn("reference", cmd, &a.reference_prefix, false).await?;
        reference_rows = run_all(&mut reference, &a, &common, &tr, &format!("{id}r")).await?;
        reference.shutdown();
    }
    let ratio_rows = ratios(&tandem_rows, &reference_rows);
    if !ratio_rows.is_empty() {
        println!();
        print!("{}", ratio_table(&ratio_rows, "tandem", "reference"));
    }
    let saturated: Vec<String> = tandem_rows
        .iter()
        .chain(&reference_rows)
        .filter(|r| r.usage.bench_cpu > 0.9)
        .map(|r| format!("{} {} {}", r.server, r.workload, r.point))
        .collect();
    if !saturated.is_empty() {
        println!(
            "\nThe generator used more than 0.9 core during: {} — those server numbers are bounded by the bench.",
            saturated.join("; ")
        );
    }
    let load_end = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    println!(
        "\nLoad average at the end: {load_end} (other processes on the machine skew latency tails)"
    );
    let json = serde_json::json!({
        "machine": machine,
        "loadavg_end": load_end,
        "rows": tandem_rows.iter().chain(&reference_rows).collect::<Vec<_>>(),
        "ratios": ratio_rows,
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&json)?)?;
    println!("\nwrote {}", a.out.display());
    Ok(())
}
