//! `tandem-bench`: run one workload against a server, or the whole suite
//! against Tandem and the reference server side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tandem_bench::report::{self, HEADER, Row};
use tandem_bench::target::{Flavor, Target};
use tandem_bench::trace::{Trace, TraceSource, all_updates};
use tandem_bench::workloads::cold_join::{self, ColdJoinParams};
use tandem_bench::workloads::connections::{self, ConnectionsParams};
use tandem_bench::workloads::durability::{self, DurabilityParams};
use tandem_bench::workloads::echo::{self, EchoParams};
use tandem_bench::workloads::fanout::{self, FanoutParams};
use tandem_bench::workloads::join_storm::{self, JoinStormParams};
use tandem_bench::workloads::{restart, throughput};

mod suite;

/// Load generator for any Yjs-protocol WebSocket server.
#[derive(Parser)]
#[command(name = "tandem-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: Common,
}

/// Options every workload shares.
#[derive(Args, Clone)]
pub struct Common {
    /// Directory holding seph-blog1.json.gz and automerge-paper.json.gz (a
    /// generated trace is used for a missing file).
    #[arg(long, global = true, env = "TANDEM_TRACES", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/traces"))]
    traces: PathBuf,
    /// Tokio worker threads for the generator (1 = single-threaded, leaves a core to the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Awareness updates per second per fan-out client (0 = none).
    #[arg(long, global = true, default_value_t = 1.0)]
    awareness_hz: f64,
    /// Seconds each fan-out point edits for.
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
}

/// Which server to measure.
#[derive(Args, Clone)]
struct TargetArgs {
    /// host:port of a server that is already running.
    #[arg(long, conflicts_with = "server_cmd")]
    addr: Option<String>,
    /// Shell command starting the server; `{port}` and `{data}` are filled in
    /// (e.g. "target/release/tandem serve --listen 127.0.0.1:{port} --data-dir {data}").
    #[arg(long)]
    server_cmd: Option<String>,
    /// Path before the document id in WebSocket URLs with `--dialect
    /// y-websocket` ("/ws/" for Tandem, "/" for @y/websocket-server).
    #[arg(long, default_value = "/ws/")]
    prefix: String,
    /// How the server frames messages and names documents: y-websocket
    /// (Tandem, @y/websocket-server), hocuspocus (document name in every
    /// frame, Auth first), y-sweet (y-websocket frames at /d/<doc>/ws/<doc>,
    /// documents made with POST /doc/new first).
    #[arg(long, value_enum, default_value = "y-websocket")]
    dialect: DialectArg,
    /// A Prometheus counter of stored update records on GET /metrics (the echo workload reads it).
    #[arg(long, default_value = "tandem_updates_applied_total")]
    stored_metric: String,
    /// Server pid for CPU/RSS (known automatically with --server-cmd).
    #[arg(long)]
    pid: Option<u32>,
    /// Name in the report.
    #[arg(long, default_value = "server")]
    name: String,
    /// The server keeps no data across restarts (skips restart, warm cold-join).
    #[arg(long)]
    ephemeral: bool,
}

/// `--dialect` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DialectArg {
    /// Bare y-protocols frames, document in the URL path.
    YWebsocket,
    /// Hocuspocus framing.
    Hocuspocus,
    /// y-sweet's URL scheme and document creation.
    YSweet,
}

impl TargetArgs {
    async fn target(&self) -> anyhow::Result<Target> {
        let flavor = match self.dialect {
            DialectArg::YWebsocket => Flavor::YWebsocket {
                prefix: self.prefix.clone(),
            },
            DialectArg::Hocuspocus => Flavor::Hocuspocus,
            DialectArg::YSweet => Flavor::YSweet,
        };
        let mut t = match (&self.addr, &self.server_cmd) {
            (_, Some(cmd)) => Target::spawn(&self.name, cmd, flavor, !self.ephemeral).await?,
            (Some(addr), None) => {
                Target::external(&self.name, addr, flavor, self.pid, !self.ephemeral)
            }
            (None, None) => anyhow::bail!("give --addr HOST:PORT or --server-cmd '...'"),
        };
        t.stored_metric = Some(self.stored_metric.clone());
        Ok(t)
    }
}

#[derive(Subcommand)]
enum Command {
    /// R rooms × C clients typing E keystrokes/s, plus awareness at 1 Hz.
    Fanout {
        #[command(flatten)]
        target: TargetArgs,
        /// Points as ROOMSxCLIENTS@RATE.
        #[arg(long, value_delimiter = ',', default_value = "10x5@10,1x50@5,100x10@2")]
        points: Vec<String>,
    },
    /// Run the fan-out floor (`tandem_bench::relay`) on LISTEN until killed:
    /// measure it with `fanout --prefix / --addr LISTEN --pid <its pid>`.
    Relay {
        /// host:port to listen on.
        #[arg(long, default_value = "127.0.0.1:9320")]
        listen: String,
    },
    /// Stream a whole trace through one room as fast as the server takes it.
    Throughput {
        #[command(flatten)]
        target: TargetArgs,
        /// Maximum updates in flight.
        #[arg(long, default_value_t = 4096)]
        window: u64,
    },
    /// Ramp idle connections, measuring RSS per connection and a probe room.
    Connections {
        #[command(flatten)]
        target: TargetArgs,
        /// Cumulative connection counts.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        steps: Vec<usize>,
    },
    /// Time to a complete SyncStep2 of the automerge-paper document.
    ColdJoin {
        #[command(flatten)]
        target: TargetArgs,
        /// Concurrent joiners.
        #[arg(long, default_value_t = 50)]
        concurrent: usize,
    },
    /// SIGKILL and restart: time to /healthz and to the first full sync.
    Restart {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// N clients join one large text document at the same moment.
    JoinStorm {
        #[command(flatten)]
        target: TargetArgs,
        /// Simultaneous joiners.
        #[arg(long, default_value_t = 50)]
        joiners: usize,
        /// Size of the document's text, MB.
        #[arg(long, default_value_t = 15)]
        mb: usize,
    },
    /// One writer, one observer and K clients that send back every update they receive.
    Echo {
        #[command(flatten)]
        target: TargetArgs,
        /// Echo clients.
        #[arg(long, default_value_t = 3)]
        echoers: usize,
        /// Edits the writer makes (at 20/s).
        #[arg(long, default_value_t = 200)]
        edits: usize,
    },
    /// SIGKILL while clients type; count delivered edits the restarted server lost.
    Durability {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        durability: suite::DurabilityArgs,
    },
    /// Every workload against Tandem, then against each peer given, with ratios.
    Suite(Box<suite::SuiteArgs>),
}

/// Loaded traces, shared by the workloads.
pub struct Traces {
    /// Keystrokes for fan-out (seph-blog1).
    pub typing: Arc<Trace>,
    /// Every update of the throughput trace (automerge-paper); this and the
    /// fields after it are empty when loaded without the stream.
    pub stream: Arc<Vec<Vec<u8>>>,
    /// Its final text.
    pub stream_text: String,
    /// The throughput trace's name for the report.
    pub stream_name: String,
    /// The final state of the throughput trace as one update (cold join).
    pub big_state: Arc<Vec<u8>>,
}

impl Traces {
    /// Loads (or generates) and replays the traces, checking the replay;
    /// without `with_stream`, only the typing trace (replaying the stream
    /// takes ~20 s, and only the throughput, cold-join and restart
    /// workloads use it).
    pub fn load(dir: &std::path::Path, with_stream: bool) -> anyhow::Result<Traces> {
        let (typing, src) = Trace::load_or_generate(dir, "seph-blog1.json.gz", 20_000)?;
        eprintln!("typing trace: {}", describe(&src, typing.txns.len()));
        if !with_stream {
            return Ok(Traces {
                typing: Arc::new(typing),
                stream: Arc::new(Vec::new()),
                stream_text: String::new(),
                stream_name: String::new(),
                big_state: Arc::new(Vec::new()),
            });
        }
        let (paper, src) = Trace::load_or_generate(dir, "automerge-paper.json.gz", 100_000)?;
        eprintln!("stream trace: {}", describe(&src, paper.txns.len()));
        let t0 = std::time::Instant::now();
        let (updates, text, big_state) = all_updates(&paper, 0x7a9d_0001);
        anyhow::ensure!(
            text == paper.end_content,
            "replaying the stream trace does not give its endContent"
        );
        eprintln!(
            "replayed {} updates in {:.1} s",
            updates.len(),
            t0.elapsed().as_secs_f64()
        );
        let stream_name = match src {
            TraceSource::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().replace(".json.gz", ""))
                .unwrap_or_default(),
            TraceSource::Generated => "generated".into(),
        };
        Ok(Traces {
            typing: Arc::new(typing),
            stream: Arc::new(updates),
            stream_text: text,
            stream_name,
            big_state: Arc::new(big_state),
        })
    }
}

fn describe(src: &TraceSource, n: usize) -> String {
    match src {
        TraceSource::File(p) => format!("{} ({n} txns)", p.display()),
        TraceSource::Generated => format!("generated ({n} txns; trace file absent)"),
    }
}

/// A short random id so repeated runs never share documents.
pub fn run_id() -> String {
    format!("{:x}", fanout::client_id_base())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = cli.common;
    let duration = Duration::from_secs_f64(common.duration);
    let id = run_id();
    let print = |rows: &[Row]| {
        println!("{HEADER}");
        for r in rows {
            r.print();
        }
    };
    match cli.command {
        Command::Fanout { target, points } => {
            let t = target.target().await?;
            let traces = Trace::load_or_generate(&common.traces, "seph-blog1.json.gz", 20_000)?.0;
            let traces = Arc::new(traces);
            let mut rows = Vec::new();
            for point in points {
                rows.push(
                    fanout::run_row(
                        &t,
                        traces.clone(),
                        &FanoutParams::parse(&point, duration)?.with_awareness(common.awareness_hz),
                        &id,
                    )
                    .await,
                );
            }
            print(&rows);
        }
        Command::Relay { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            println!("relay listening on {}", listener.local_addr()?);
            tokio::task::LocalSet::new()
                .run_until(tandem_bench::relay::serve(listener))
                .await?;
        }
        Command::Throughput { target, window } => {
            let t = target.target().await?;
            let tr = Traces::load(&common.traces, true)?;
            print(&[throughput::run_row(
                &t,
                tr.stream.clone(),
                &tr.stream_text,
                &tr.stream_name,
                &id,
                window,
            )
            .await]);
        }
        Command::Connections { target, steps } => {
            let t = target.target().await?;
            let typing =
                Arc::new(Trace::load_or_generate(&common.traces, "seph-blog1.json.gz", 20_000)?.0);
            let p = ConnectionsParams {
                steps,
                probe: suite::probe_params(duration),
                parallel_opens: 64,
            };
            print(&connections::run_rows(&t, typing, &id, &p).await);
        }
        Command::ColdJoin { target, concurrent } => {
            let mut t = target.target().await?;
            let tr = Traces::load(&common.traces, true)?;
            let p = ColdJoinParams {
                single: 5,
                concurrent,
            };
            print(
                &cold_join::run_rows(&mut t, tr.big_state.clone(), &tr.stream_text, &id, &p).await,
            );
        }
        Command::Restart { target } => {
            let mut t = target.target().await?;
            let tr = Traces::load(&common.traces, true)?;
            let (updates, text) = suite::restart_slice(&tr);
            print(&[restart::run_row(&mut t, updates, &text, &id).await]);
        }
        Command::JoinStorm {
            target,
            joiners,
            mb,
        } => {
            let t = target.target().await?;
            let p = JoinStormParams {
                joiners,
                doc_bytes: mb * 1_000_000,
            };
            print(&[join_storm::run_row(&t, &id, &p).await]);
        }
        Command::Echo {
            target,
            echoers,
            edits,
        } => {
            let t = target.target().await?;
            let typing =
                Arc::new(Trace::load_or_generate(&common.traces, "seph-blog1.json.gz", 20_000)?.0);
            let p = EchoParams {
                echoers,
                edits,
                rate: 20.0,
            };
            print(&[echo::run_row(&t, typing, &id, &p).await]);
        }
        Command::Durability { target, durability } => {
            let mut t = target.target().await?;
            let typing =
                Arc::new(Trace::load_or_generate(&common.traces, "seph-blog1.json.gz", 20_000)?.0);
            let p: DurabilityParams = durability.params()?;
            print(&durability::run_rows(&mut t, typing, &id, &p).await);
        }
        Command::Suite(args) => suite::run(*args, common, &id).await?,
    }
    let _ = report::ratios;
    Ok(())
}
