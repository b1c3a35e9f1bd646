//! Smoke tests of the generator against the real Tandem binary: fan-out
//! connects, measures deliveries and finds none missing; a durability trial
//! SIGKILLs the server, restarts it on the same data and finds every
//! delivered edit still there; a throughput stream delivers every update
//! and ends on the trace's text; the fan-out floor (`tandem-bench relay`)
//! delivers every update too. Assert no time. (The Hocuspocus framing is
//! covered by the unit tests in `src/dialect.rs`, without Node.)

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tandem_bench::dialect::{Dialect, Endpoint};
use tandem_bench::target::{Flavor, Target};
use tandem_bench::trace::Trace;
use tandem_bench::workloads::durability::{self, DurabilityParams};
use tandem_bench::workloads::fanout::{self, FanoutParams};
use tandem_bench::workloads::throughput;

/// The server binary: $TANDEM_BIN, else $CARGO_TARGET_DIR/debug/tandem, else <workspace>/target/debug/tandem.
fn tandem_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANDEM_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("debug/tandem");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/tandem")
}

/// A Tandem server on a free port with a temp data dir; killed on drop.
struct Server {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let bin = tandem_bin();
        assert!(
            bin.exists(),
            "tandem binary not found at {} (build it: cargo build -p tandem, or set TANDEM_BIN)",
            bin.display()
        );
        let data = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tandem");
        // The server prints "tandem listening on http://ADDR" once it serves;
        // reading blocks until then (or until it exits: EOF).
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("read server stdout");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.trim().to_string());
                break;
            }
        }
        let addr = addr.expect("tandem exited without printing its listening line");
        // Keep draining stdout so a later print never hits a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            addr,
            _data: data,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn fanout_against_tandem_connects_measures_and_misses_nothing() {
    let server = Server::start();
    let endpoint_of = |doc: &str| Endpoint {
        url: format!("ws://{}/ws/{doc}", server.addr),
        dialect: Dialect::YWebsocket,
    };
    let result = small_fanout(&endpoint_of, "smoke").await;

    assert!(result.sends > 0, "clients sent edits");
    assert_eq!(
        result.latency.n, result.deliveries,
        "every delivery was timed"
    );
}

#[tokio::test]
async fn durability_trial_kills_tandem_restarts_it_and_finds_no_delivered_edit_lost() {
    let cmd = format!(
        "RUST_LOG=warn {} serve --listen 127.0.0.1:{{port}} --data-dir {{data}}",
        tandem_bin().display()
    );
    let flavor = Flavor::YWebsocket {
        prefix: "/ws/".into(),
    };
    let mut target = Target::spawn("tandem", &cmd, flavor, true)
        .await
        .expect("tandem starts");
    let params = DurabilityParams {
        writers: 2,
        observers: 1,
        rate: 20.0,
        trials: 1,
        kill_between: (Duration::from_millis(800), Duration::from_millis(1200)),
    };
    let trace = Arc::new(Trace::generate(2_000, 5));
    let rows = durability::run_rows(&mut target, trace, "smoke", &params).await;

    assert_eq!(rows.len(), 1, "one row per trial");
    let row = &rows[0];
    assert!(row.ok, "trial completed: {}", row.note);
    assert!(
        row.rate.unwrap_or(0.0) > 0.0,
        "observers saw edits: {}",
        row.note
    );
    assert_eq!(row.missing, Some(0), "no delivered edit lost: {}", row.note);
}

/// The throughput stream (its writer feeds the frames up to the window and
/// writes them many at a time) gets every update to the receiving peer, and
/// a fresh joiner then reads the trace's end text.
#[tokio::test]
async fn throughput_stream_against_tandem_delivers_every_update_and_ends_on_the_trace_text() {
    let cmd = format!(
        "RUST_LOG=warn {} serve --listen 127.0.0.1:{{port}} --data-dir {{data}} \
         --peer-msgs-per-sec 0 --peer-bytes-per-sec 0",
        tandem_bin().display()
    );
    let flavor = Flavor::YWebsocket {
        prefix: "/ws/".into(),
    };
    let target = Target::spawn("tandem", &cmd, flavor, true)
        .await
        .expect("tandem starts");
    let trace = Trace::generate(3_000, 7);
    let (updates, end_text, _) = tandem_bench::trace::all_updates(&trace, 42);
    let total = updates.len();
    assert!(total > 1_000, "the trace has updates to stream");
    let row =
        throughput::run_row(&target, Arc::new(updates), &end_text, "smoke", "smoke", 512).await;

    assert_eq!(row.delivered, Some(total as u64), "{}", row.note);
    assert!(row.ok, "content matches and no error: {}", row.note);
}

/// `suite --rounds 2` with Tandem standing in for the peer too: both rounds
/// run, the second in the reverse order, every row says its round and what
/// the disk did meanwhile, and the ratios come per round and as their
/// median.
#[test]
fn suite_rounds_alternate_the_order_and_report_a_median() {
    let bin = tandem_bin();
    assert!(bin.exists(), "tandem binary not found at {}", bin.display());
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("results.json");
    let serve = format!(
        "RUST_LOG=warn {} serve --listen 127.0.0.1:{{port}} --data-dir {{data}}",
        bin.display()
    );
    let status = Command::new(env!("CARGO_BIN_EXE_tandem-bench"))
        .arg("--traces")
        .arg(tmp.path().join("no-traces"))
        .args(["suite", "--tandem-cmd", &serve, "--reference-cmd", &serve])
        .args(["--reference-prefix", "/ws/", "--workloads", "fanout"])
        .args(["--points", "1x2@5", "--duration", "1", "--rounds", "2"])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run tandem-bench suite");
    assert!(status.success(), "suite failed: {status}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("results written"))
            .expect("results are JSON");
    let order: Vec<(u64, &str)> = json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["round"].as_u64().expect("round"),
                r["server"].as_str().expect("server"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (1, "tandem"),
            (1, "reference"),
            (2, "reference"),
            (2, "tandem")
        ]
    );
    for row in json["rows"].as_array().expect("rows") {
        let timed = row["detail"]["disk_syncs"]["n"].as_u64().unwrap_or(0);
        assert!(timed >= 1, "each fan-out row says what the disk did: {row}");
    }
    let peer = &json["ratios"][0];
    assert_eq!(peer["peer"], "reference");
    assert_eq!(peer["rounds"].as_array().map(Vec::len), Some(2));
    let median = &peer["ratios"][0];
    assert_eq!(median["point"], "1x2@5/s");
    // Of two rounds, the median is the mean of the two.
    let rate_of = |round: usize| {
        peer["rounds"][round][0]["rate"]
            .as_f64()
            .expect("a rate ratio per round")
    };
    let median_rate = median["rate"].as_f64().expect("a median rate ratio");
    assert!(
        (median_rate - (rate_of(0) + rate_of(1)) / 2.0).abs() < 1e-9,
        "median {median_rate} of {} and {}",
        rate_of(0),
        rate_of(1)
    );
}

/// The fan-out floor (`tandem-bench relay`) passes the same fan-out check
/// as a server: every client joins, every update and awareness change
/// reaches every other client of its room, none is missing.
#[tokio::test]
async fn fanout_against_the_relay_floor_delivers_every_update_to_every_peer() {
    let cmd = format!(
        "{} relay --listen 127.0.0.1:{{port}}",
        env!("CARGO_BIN_EXE_tandem-bench")
    );
    let flavor = Flavor::YWebsocket { prefix: "/".into() };
    let target = Target::spawn("floor", &cmd, flavor, false)
        .await
        .expect("relay starts and answers /healthz");
    let result = small_fanout(&|doc: &str| target.endpoint(doc), "floor").await;

    assert!(result.sends > 0, "clients sent edits");
}

/// Two rooms of three clients typing for 2 s; asserts that every client
/// joined, every edit and awareness change reached the other clients of its
/// room, and no client failed.
async fn small_fanout(
    endpoint_of: &(dyn Fn(&str) -> Endpoint + Sync),
    room_prefix: &str,
) -> fanout::FanoutResult {
    let trace = Arc::new(Trace::generate(2_000, 11));
    let mut params = FanoutParams::parse("2x3@10", Duration::from_secs(2)).expect("point parses");
    params.drain = Duration::from_secs(10);
    let result = fanout::run(endpoint_of, room_prefix, trace, &params).await;
    assert!(
        result.errors.is_empty(),
        "client errors: {:?}",
        result.errors
    );
    assert_eq!(result.joined, 6, "every client joined");
    assert!(result.deliveries > 0, "peers received edits");
    assert_eq!(result.missing, 0, "no delivery missing: {result:?}");
    assert!(result.awareness_received > 0, "awareness reached peers");
    result
}
