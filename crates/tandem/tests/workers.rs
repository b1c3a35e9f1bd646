//! `--workers` sets the async runtime's worker threads (seen on `GET
//! /metrics`); without it the server runs one less than the cores, at
//! least one; zero is refused at startup.

mod common;

use std::process::Command;

use common::start;

/// The `tandem_runtime_workers` gauge of a running server.
fn workers_of(server: &common::Server) -> usize {
    let (status, body) = server.request("GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("tandem_runtime_workers "))
        .unwrap_or_else(|| panic!("no worker gauge in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_workers_flag_sets_the_runtimes_worker_threads() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &["--workers", "3"]);
    assert_eq!(workers_of(&server), 3);
}

#[test]
fn without_the_flag_the_server_runs_one_worker_less_than_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(workers_of(&server), cores.saturating_sub(1).max(1));
}

#[test]
fn zero_workers_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers"), "{err}");
}
