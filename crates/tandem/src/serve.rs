//! `tandem serve`: the server's configuration (one clap struct: flags, env
//! vars, defaults shown in `--help`) and its startup and shutdown.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use tandem_gateway::auth::AuthArgs;
use tandem_gateway::edge::EdgeLimits;
use tandem_gateway::{Edge, Limits};
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::store_args::StoreArgs;

/// Configuration of `tandem serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (printed at startup).
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub edge: EdgeLimits,

    /// Async worker threads (rooms, connections, HTTP). Default: one less
    /// than the cores, at least one (the last core is left to the log's
    /// syncs, sled and the kernel's network path; see the README).
    #[arg(long, env = "TANDEM_WORKERS")]
    pub workers: Option<std::num::NonZeroUsize>,

    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `tandem_gateway=debug`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).context("parsing --log")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Workers get the yrs threads' stack, so a room may apply a keystroke
    // in place instead of hopping to a yrs thread and back.
    let workers = config
        .workers
        .map_or_else(default_workers, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_stack_size(tandem_gateway::STACK_BYTES)
        .on_thread_start(tandem_gateway::mark_big_stack)
        .build()
        .context("starting the async runtime")?;
    // Secure by default: refuses a non-loopback address without --auth, before opening anything.
    let auth = config
        .auth
        .build(config.listen, &config.store.data_dir)
        .context("configuring authentication")?;
    runtime.block_on(async move {
        let store_args = config.store.clone();
        let store = tokio::task::spawn_blocking(move || store_args.open()).await??;
        let listener = tandem_gateway::bind(config.listen)?;
        let addr = listener.local_addr()?;
        info!(%addr, workers, data_dir = %config.store.data_dir.display(), auth = auth.is_on(), "tandem listening");
        // Tests and scripts parse this line.
        println!("tandem listening on http://{addr}");
        std::io::stdout().flush()?;
        let edge = Edge {
            auth,
            limits: config.edge,
        };
        tandem_gateway::serve(listener, store, config.limits, edge, shutdown_signal()).await?;
        info!("stopped");
        Ok(())
    })
}

/// Worker threads without `--workers`: one less than the cores the process
/// may use, at least one. On this project's 2-core VM one worker spent
/// 7-20 % less CPU per delivered update than two in interleaved fan-out
/// runs (10 × 5: 64 → 51 µs on average), and streamed as many updates per
/// second or up to 18 % more: a worker that is busy (in a room, or in a
/// sync it leads) takes the next socket event without sleeping, where a
/// second worker is woken for it (a futex wake and a cross-core interrupt,
/// tens of µs of CPU each on this VM). The price: with one worker, a sync
/// that a room leads holds every room while it lasts; after one slower
/// than `tandem_store::SLOW_SYNC`, syncs go to the store's flusher thread
/// (see the store's `commit` module).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
