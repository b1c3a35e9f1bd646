//! `tandem-bench suite`: every workload against Tandem, then against each
//! peer whose command is given (the reference `@y/websocket-server`,
//! Hocuspocus in memory and with SQLite, y-sweet with a filesystem store),
//! one after another in the same run; prints one Markdown table, the
//! Tandem/peer ratios, and writes `results.json` with the machine
//! description.
//!
//! With `--rounds N` the whole sequence runs N times, the servers' order
//! reversed every other round (so a machine that speeds up or slows down
//! over minutes, as this project's VMs do by 20-40 %, favours no server),
//! and the ratios are given per round and as their median.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tandem_bench::report::{HEADER, Ratio, Row, median_ratios, ratio_table, ratios};
use tandem_bench::target::{Flavor, Target};
use tandem_bench::workloads::cold_join::{self, ColdJoinParams};
use tandem_bench::workloads::connections::{self, ConnectionsParams};
use tandem_bench::workloads::durability::{self, DurabilityParams};
use tandem_bench::workloads::echo::{self, EchoParams};
use tandem_bench::workloads::fanout::{self, FanoutParams};
use tandem_bench::workloads::join_storm::{self, JoinStormParams};
use tandem_bench::workloads::{restart, throughput};

use crate::{Common, Traces};

/// Durability options (the suite's and the `durability` command's).
#[derive(Args, Clone)]
pub struct DurabilityArgs {
    /// Trials per persisting server.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Writers typing during a trial.
    #[arg(long, default_value_t = 3)]
    writers: usize,
    /// Observers recording deliveries.
    #[arg(long, default_value_t = 2)]
    observers: usize,
    /// Keystrokes per second per writer.
    #[arg(long, default_value_t = 10.0)]
    writer_rate: f64,
    /// SIGKILL uniformly at random between these seconds into the typing.
    #[arg(long, value_delimiter = ',', default_value = "5,25")]
    kill_between: Vec<f64>,
}

impl DurabilityArgs {
    /// The workload parameters.
    pub fn params(&self) -> anyhow::Result<DurabilityParams> {
        let [lo, hi] = self.kill_between[..] else {
            anyhow::bail!("--kill-between takes two seconds, e.g. 2,12");
        };
        anyhow::ensure!(0.0 < lo && lo <= hi, "--kill-between needs 0 < LO <= HI");
        Ok(DurabilityParams {
            writers: self.writers,
            observers: self.observers,
            rate: self.writer_rate,
            trials: self.trials,
            kill_between: (Duration::from_secs_f64(lo), Duration::from_secs_f64(hi)),
        })
    }
}

/// Suite options.
#[derive(Args, Clone)]
pub struct SuiteArgs {
    /// Command starting Tandem (`{port}`, `{data}` filled in).
    #[arg(long)]
    tandem_cmd: String,
    /// Tandem's WebSocket path prefix.
    #[arg(long, default_value = "/ws/")]
    tandem_prefix: String,
    /// Tandem's counter of stored update records on /metrics (echo workload).
    #[arg(long, default_value = "tandem_updates_applied_total")]
    tandem_stored_metric: String,
    /// Command starting the reference @y/websocket-server (skipped when absent).
    #[arg(long)]
    reference_cmd: Option<String>,
    /// The reference server's WebSocket path prefix.
    #[arg(long, default_value = "/")]
    reference_prefix: String,
    /// Command starting Hocuspocus in memory (skipped when absent).
    #[arg(long)]
    hocuspocus_cmd: Option<String>,
    /// Command starting Hocuspocus with its SQLite extension in `{data}` (skipped when absent).
    #[arg(long)]
    hocuspocus_sqlite_cmd: Option<String>,
    /// Command starting y-sweet with a filesystem store in `{data}` (skipped when absent).
    #[arg(long)]
    ysweet_cmd: Option<String>,
    /// Command starting the fan-out floor, `tandem-bench relay --listen
    /// 127.0.0.1:{port}` (skipped when absent): it runs the fan-out points
    /// only, and its rows say what the generator and the kernel cost alone.
    #[arg(long)]
    floor_cmd: Option<String>,
    /// Only these servers (tandem, reference, hocuspocus, hocuspocus-sqlite,
    /// y-sweet, floor, among those whose command is given); all when absent.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Only these workloads (fanout, connections, throughput, cold-join,
    /// restart, join-storm, echo, durability); all when absent.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
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
    /// Join-storm joiners.
    #[arg(long, default_value_t = 50)]
    storm_joiners: usize,
    /// Join-storm document text size, MB.
    #[arg(long, default_value_t = 15)]
    storm_mb: usize,
    /// Echo clients in the echo workload.
    #[arg(long, default_value_t = 3)]
    echoers: usize,
    /// Edits in the echo workload (20/s).
    #[arg(long, default_value_t = 200)]
    echo_edits: usize,
    #[command(flatten)]
    durability: DurabilityArgs,
    /// Times to run the whole sequence, the servers' order reversed every
    /// other round; the ratios are then also given as their median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Where to write the JSON results.
    #[arg(
        long,
        default_value = "target/bench/results.json",
        overrides_with = "out"
    )]
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
    fanout_only: bool,
) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs_f64(common.duration);
    let wanted = |w: &str| a.runs(w, fanout_only);
    let mut rows = Vec::new();
    let emit = |rows: &mut Vec<Row>, r: Row| {
        println!("{}", r.markdown());
        rows.push(r);
    };
    if wanted("fanout") {
        for point in &a.points {
            let p = FanoutParams::parse(point, duration)?.with_awareness(common.awareness_hz);
            fresh(t).await?;
            emit(
                &mut rows,
                fanout::run_row(t, tr.typing.clone(), &p, id).await,
            );
        }
    }
    if wanted("connections") {
        let cp = ConnectionsParams {
            steps: a.steps.clone(),
            probe: probe_params(duration),
            parallel_opens: 64,
        };
        fresh(t).await?;
        for r in connections::run_rows(t, tr.typing.clone(), id, &cp).await {
            emit(&mut rows, r);
        }
    }
    if wanted("throughput") {
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
    }
    if wanted("cold-join") {
        fresh(t).await?;
        let jp = ColdJoinParams {
            single: 5,
            concurrent: a.concurrent,
        };
        for r in cold_join::run_rows(t, tr.big_state.clone(), &tr.stream_text, id, &jp).await {
            emit(&mut rows, r);
        }
    }
    if wanted("restart") {
        let (updates, text) = restart_slice(tr);
        emit(&mut rows, restart::run_row(t, updates, &text, id).await);
    }
    if wanted("join-storm") {
        fresh(t).await?;
        let p = JoinStormParams {
            joiners: a.storm_joiners,
            doc_bytes: a.storm_mb * 1_000_000,
        };
        emit(&mut rows, join_storm::run_row(t, id, &p).await);
    }
    if wanted("echo") {
        fresh(t).await?;
        let p = EchoParams {
            echoers: a.echoers,
            edits: a.echo_edits,
            rate: 20.0,
        };
        emit(&mut rows, echo::run_row(t, tr.typing.clone(), id, &p).await);
    }
    if wanted("durability") {
        fresh(t).await?;
        let p = a.durability.params()?;
        for r in durability::run_rows(t, tr.typing.clone(), id, &p).await {
            emit(&mut rows, r);
        }
    }
    Ok(rows)
}

/// One server of the suite: how to start it and what kind it is.
struct Peer {
    name: &'static str,
    cmd: String,
    flavor: Flavor,
    persistent: bool,
    /// Runs the fan-out points only (the floor keeps no documents).
    fanout_only: bool,
}

impl SuiteArgs {
    /// Whether workload `w` is to run (all of them when none was named).
    fn wants(&self, w: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|x| x == w)
    }

    /// Whether workload `w` runs against a server that runs the fan-out
    /// points only when `fanout_only`.
    fn runs(&self, w: &str, fanout_only: bool) -> bool {
        self.wants(w) && (!fanout_only || w == "fanout")
    }

    /// Tandem first, then every peer whose command was given.
    fn servers(&self) -> Vec<Peer> {
        let mut out = vec![Peer {
            name: "tandem",
            cmd: self.tandem_cmd.clone(),
            flavor: Flavor::YWebsocket {
                prefix: self.tandem_prefix.clone(),
            },
            persistent: true,
            fanout_only: false,
        }];
        let peers = [
            (
                "reference",
                &self.reference_cmd,
                Flavor::YWebsocket {
                    prefix: self.reference_prefix.clone(),
                },
                false,
            ),
            (
                "hocuspocus",
                &self.hocuspocus_cmd,
                Flavor::Hocuspocus,
                false,
            ),
            (
                "hocuspocus-sqlite",
                &self.hocuspocus_sqlite_cmd,
                Flavor::Hocuspocus,
                true,
            ),
            ("y-sweet", &self.ysweet_cmd, Flavor::YSweet, true),
            (
                "floor",
                &self.floor_cmd,
                Flavor::YWebsocket { prefix: "/".into() },
                false,
            ),
        ];
        for (name, cmd, flavor, persistent) in peers {
            if let Some(cmd) = cmd {
                out.push(Peer {
                    name,
                    cmd: cmd.clone(),
                    flavor,
                    persistent,
                    fanout_only: name == "floor",
                });
            }
        }
        out.retain(|p| self.servers.is_empty() || self.servers.iter().any(|s| s == p.name));
        out
    }
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
        "Machine: {} cores, {}, {}, {}, load {}",
        machine["nproc"],
        machine["model"].as_str().unwrap_or(""),
        machine["memory"].as_str().unwrap_or(""),
        machine["date"].as_str().unwrap_or(""),
        machine["loadavg"].as_str().unwrap_or("")
    );
    let wanted = |w: &str| a.wants(w);
    let tr = Traces::load(
        &common.traces,
        wanted("throughput") || wanted("cold-join") || wanted("restart"),
    )?;
    let mut by_server: Vec<(u32, &str, Vec<Row>)> = Vec::new();
    // Per round, per peer: Tandem / peer.
    let mut round_ratios: Vec<Vec<(&str, Vec<Ratio>)>> = Vec::new();
    for round in 1..=a.rounds {
        if a.rounds > 1 {
            println!("\nRound {round} of {}", a.rounds);
        }
        println!("{HEADER}");
        let mut servers = a.servers();
        if round % 2 == 0 {
            servers.reverse();
        }
        let mut this_round: Vec<(&str, Vec<Row>)> = Vec::new();
        for (i, peer) in servers.into_iter().enumerate() {
            let started = Target::spawn(peer.name, &peer.cmd, peer.flavor, peer.persistent).await;
            let mut t = match started {
                Ok(t) => t,
                Err(e) => {
                    println!("| - | - | {} | could not start: {e} |", peer.name);
                    continue;
                }
            };
            if peer.name == "tandem" {
                t.stored_metric = Some(a.tandem_stored_metric.clone());
            }
            let id = format!("{id}r{round}s{i}");
            let rows = run_all(&mut t, &a, &common, &tr, &id, peer.fanout_only).await?;
            t.shutdown();
            this_round.push((peer.name, rows));
        }
        let mut ratios_now = Vec::new();
        if let Some((_, tandem_rows)) = this_round.iter().find(|(n, _)| *n == "tandem") {
            for (name, rows) in this_round.iter().filter(|(n, _)| *n != "tandem") {
                let r = ratios(tandem_rows, rows);
                if !r.is_empty() {
                    println!();
                    if a.rounds > 1 {
                        println!("Round {round}:");
                    }
                    print!("{}", ratio_table(&r, "tandem", name));
                    ratios_now.push((*name, r));
                }
            }
        }
        round_ratios.push(ratios_now);
        by_server.extend(
            this_round
                .into_iter()
                .map(|(name, rows)| (round, name, rows)),
        );
    }
    let mut all_ratios = Vec::new();
    // Every peer that had ratios in some round, in order of appearance.
    let mut peers: Vec<&str> = Vec::new();
    for (name, _) in round_ratios.iter().flatten() {
        if !peers.contains(name) {
            peers.push(name);
        }
    }
    for name in peers {
        let per_round: Vec<Vec<Ratio>> = round_ratios
            .iter()
            .map(|round| {
                round
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default()
            })
            .collect();
        let combined = median_ratios(&per_round);
        if a.rounds > 1 {
            println!("\nMedian of {} rounds:", a.rounds);
            print!("{}", ratio_table(&combined, "tandem", name));
        }
        all_ratios.push(serde_json::json!({
            "peer": name,
            "ratios": combined,
            "rounds": per_round,
        }));
    }
    let every_row: Vec<&Row> = by_server.iter().flat_map(|(_, _, r)| r).collect();
    // Each row with the round it was measured in.
    let rows_json: Vec<serde_json::Value> = by_server
        .iter()
        .flat_map(|(round, _, rows)| {
            rows.iter().map(move |r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("round".to_string(), (*round).into());
                }
                v
            })
        })
        .collect();
    let saturated: Vec<String> = every_row
        .iter()
        .filter(|r| r.usage.bench_cpu > 0.9)
        .map(|r| format!("{} {} {}", r.server, r.workload, r.point))
        .collect();
    if !saturated.is_empty() {
        println!(
            "\nThe generator used more than 0.9 core during: {} — those server numbers are bounded by the bench.",
            saturated.join("; ")
        );
    }
    let stalled: Vec<String> = every_row
        .iter()
        .filter(|r| {
            r.detail["disk_syncs"]["max_ms"]
                .as_f64()
                .is_some_and(|ms| ms > tandem_bench::measure::DISK_STALL_MS)
        })
        .map(|r| format!("{} {} {}", r.server, r.workload, r.point))
        .collect();
    if !stalled.is_empty() {
        println!(
            "\nThe disk stalled (a probe sync over {} ms) during: {} — a server durable before it broadcasts waits for it there.",
            tandem_bench::measure::DISK_STALL_MS,
            stalled.join("; ")
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
        "rows": rows_json,
        "ratios": all_ratios,
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&json)?)?;
    println!("\nwrote {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        suite: SuiteArgs,
    }

    fn args(extra: &[&str]) -> SuiteArgs {
        let base = ["suite", "--tandem-cmd", "t {port}"];
        Cli::parse_from(base.iter().chain(extra)).suite
    }

    #[test]
    fn the_floor_is_a_server_only_with_its_command_and_runs_the_fanout_points_only() {
        let without = args(&[]);
        assert!(without.servers().iter().all(|p| p.name != "floor"));
        let with = args(&["--floor-cmd", "relay {port}"]);
        let servers = with.servers();
        let floor = servers
            .iter()
            .find(|p| p.name == "floor")
            .expect("the floor is a server");
        assert!(floor.fanout_only);
        assert!(!floor.persistent);
        assert!(with.runs("fanout", floor.fanout_only));
        for w in ["connections", "throughput", "cold-join", "restart", "echo"] {
            assert!(!with.runs(w, floor.fanout_only), "the floor skips {w}");
            assert!(with.runs(w, false), "tandem runs {w}");
        }
    }
}
